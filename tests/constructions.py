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
