"""Networks for which LEWC holds exactly: two small bias-free ReLU nets embedded in disjoint blocks.

Endpoint A of a 2×-wide network holds net P in the first half of every hidden layer and zeros
elsewhere; endpoint B holds net Q in the second half. The merged layer ℓ is then exactly
[(1-λ)^ℓ p_ℓ ; λ^ℓ q_ℓ] = (1-λ)^ℓ f_ℓ(A) + λ^ℓ f_ℓ(B).
"""

from __future__ import annotations

import torch

from lewc.models import build


def _embed(weight_small: torch.Tensor, wide: torch.Tensor, half: int, in_half: bool, out_half: bool) -> None:
    """Copy a small weight into block ``half`` (0 or 1) of a wide weight; the rest stays zero."""
    wide.zero_()
    o = weight_small.shape[0]
    i = weight_small.shape[1]
    rows = slice(half * o, (half + 1) * o) if out_half else slice(0, o)
    cols = slice(half * i, (half + 1) * i) if in_half else slice(0, i)
    wide[rows, cols] = weight_small


def disjoint_pair(
    kind: str,
    depth: int,
    hidden: int,
    seed: int,
    in_shape=(3, 16, 16),
    num_classes: int = 10,
    bias: bool = False,
    shared_block: bool = False,
):
    """(model_a, model_b) wide endpoints built from random small nets P (seed) and Q (seed + 1).

    ``bias=True`` puts random biases into the small nets, ``shared_block=True`` puts P and Q into the
    same block: both break the exact identity.
    """
    small = []
    for s in (seed, seed + 1):
        torch.manual_seed(s)
        small.append(_small(kind, depth, hidden, in_shape, num_classes, bias))
        if bias:
            with torch.no_grad():
                for m in small[-1].modules():
                    if getattr(m, "bias", None) is not None:
                        m.bias.normal_(0, 0.5)
    wides = []
    for half, net in enumerate(small):
        wide = _small(kind, depth, 2 * hidden, in_shape, num_classes, bias)
        block = 0 if shared_block else half
        specs_small, specs_wide = net.layers(), wide.layers()
        with torch.no_grad():
            for k, (ls, lw) in enumerate(zip(specs_small, specs_wide, strict=True)):
                first, last = k == 0, k == len(specs_small) - 1
                _embed(ls.weight_module.weight, lw.weight_module.weight, block, in_half=not first, out_half=not last)
                if ls.weight_module.bias is not None:
                    b_small, b_wide = ls.weight_module.bias, lw.weight_module.bias
                    n = b_small.shape[0]
                    b_wide.zero_()
                    if last:
                        b_wide.copy_(b_small)
                    else:
                        b_wide[block * n : (block + 1) * n] = b_small
        wides.append(wide.eval())
    return wides[0], wides[1]


def _small(kind, depth, hidden, in_shape, num_classes, bias):
    if kind == "mlp":
        return build("mlp", 1, num_classes, in_shape, norm="none", bias=bias, base_width=hidden, depth=depth)
    # vgg11 at base width 64·hidden/64: channel counts are multiples of ``hidden``, so 2×hidden doubles every layer
    return build("vgg11", 1, num_classes, in_shape, norm="none", bias=bias, base_width=hidden)


# --- the paper's mechanism up to ε: narrow nets placed at unit positions of a wide one -----------------


def small_mlps(depth: int, hidden: int, seeds, in_shape=(3, 16, 16), num_classes: int = 10):
    """Bias-free ReLU MLPs of ``depth`` hidden layers × ``hidden`` units, random (He) initialisations."""
    nets = []
    for s in seeds:
        torch.manual_seed(s)
        nets.append(_small("mlp", depth, hidden, in_shape, num_classes, False).eval())
    return nets


def train_small(nets, dataset, steps: int = 150, lr: float = 0.05, batch: int = 128, seed: int = 0):
    """A few SGD steps of each net on ``dataset``'s training split (bias-free nets stay bias-free)."""
    g = torch.Generator().manual_seed(seed)
    x_all = dataset.normalize(dataset.train.x)
    for net in nets:
        net.train()
        opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9, weight_decay=1e-3)
        for _ in range(steps):
            idx = torch.randint(0, len(dataset.train), (batch,), generator=g)
            loss = torch.nn.functional.cross_entropy(net(x_all[idx]), dataset.train.y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        net.eval()
    return nets


def positions(hidden: int, wide: int, depth: int, seed: int, eps: float | None = None):
    """Unit positions of P and Q in each hidden layer of a ``wide`` network.

    ``eps=None``: both drawn independently at random (the overlap is chance, ≈ hidden/wide of the units);
    ``eps`` in [0, 1]: Q shares exactly round(eps·hidden) of P's positions (drawn at random), the rest
    of Q's units lie outside P's (eps = 0: disjoint blocks, exact LEWC; eps = 1: the same units).
    """
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(depth):
        pos_p = torch.randperm(wide, generator=g)[:hidden]
        if eps is None:
            pos_q = torch.randperm(wide, generator=g)[:hidden]
        else:
            shared = round(eps * hidden)
            if wide - hidden < hidden - shared:
                raise ValueError(f"width {wide} cannot hold {hidden} units of Q with only {shared} shared")
            free = torch.ones(wide, dtype=torch.bool)
            free[pos_p] = False
            outside = torch.nonzero(free).flatten()
            pos_q = torch.cat(
                [
                    pos_p[torch.randperm(hidden, generator=g)[:shared]],
                    outside[torch.randperm(len(outside), generator=g)[: hidden - shared]],
                ]
            )
            pos_q = pos_q[torch.randperm(hidden, generator=g)]  # which of Q's units sit on P's is random too
        out.append((pos_p, pos_q))
    return out


def placed_pair(p, q, wide: int, seed: int = 0, eps: float | None = None):
    """(model_a, model_b): bias-free narrow MLPs P and Q placed at unit positions of a ``wide`` one.

    A holds P at P's positions and zeros elsewhere, B holds Q at Q's (``positions``). Where the
    positions do not meet, the merged layer is exactly (1-λ)^ℓ f_ℓ(A) + λ^ℓ f_ℓ(B); units shared by
    chance (or, with ``eps``, by design) mix P's and Q's weights, which is what breaks LEWC.
    """
    specs_p = p.layers()
    depth, hidden = len(specs_p) - 1, specs_p[0].weight_module.weight.shape[0]
    pos = positions(hidden, wide, depth, seed, eps)
    wides = []
    for net, which in ((p, 0), (q, 1)):
        first, head = specs_p[0].weight_module.weight, specs_p[-1].weight_module.weight
        wide_net = _small("mlp", depth, wide, (first.shape[1],), head.shape[0], False)  # MLPs flatten their input
        with torch.no_grad():
            for k, (ls, lw) in enumerate(zip(net.layers(), wide_net.layers(), strict=True)):
                w = lw.weight_module.weight
                w.zero_()
                rows = pos[k][which] if k < depth else torch.arange(w.shape[0])
                cols = pos[k - 1][which] if k > 0 else torch.arange(w.shape[1])
                w[rows[:, None], cols[None, :]] = ls.weight_module.weight
        wides.append(wide_net.eval())
    return wides[0], wides[1]
