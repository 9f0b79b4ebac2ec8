"""What does permutation alignment cost next to the rest of verify? Alignment time vs one forward pass.

For each model, two independently initialised networks (alignment's cost depends on the shapes and
on the number of coordinate-descent passes, which trained networks need a few more of — the default
MLP ×16 pair took 7), times:

* weight matching (``lewc.align.methods.weight_matching``: float64 cost matrices on the device, one
  ``linear_sum_assignment`` per group and pass),
* activation matching on 2,000 images (``lewc.align.methods.activation_matching``),
* one forward pass of A over the test set (10,000 images; for the ResNets it is timed on
  ``--forward-images`` and scaled linearly, since the forward is linear in the number of images),

and prints their ratio, then fits time ∝ width^p for weight matching on the ResNets and extrapolates
to ×32 (groups of up to 2,048 channels) — the assumption being that the pass count stays the same.

    python benchmarks/bench_align.py [--device cuda] [--resnet-widths 1,2,4,8] [--threads 1]

``--compare`` instead times weight matching against the algorithm it replaced (``before`` below:
every group's cost matrix rebuilt from float64 copies of both states at every solve, a group that
just changed solved again), in the same process on the same pair, and checks that both return the
same permutations and objective:

    python benchmarks/bench_align.py --compare [--width 4] [--checkpoints A.safetensors B.safetensors]

(MLP ×4 is 3×2048; without ``--checkpoints`` the pair is two random initialisations.)
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from lewc import align
from lewc.models import build
from lewc.sweep.merge import model_state

TEST_IMAGES = 10_000


def timed(fn, repeat: int = 1):
    best = float("inf")
    out = None
    for _ in range(repeat):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        start = time.perf_counter()
        out = fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best, out


@torch.no_grad()
def forward_seconds(model, in_shape, n_images: int, device, batch: int = 500) -> float:
    x = torch.randn(min(batch, n_images), *in_shape, device=device)
    model(x)  # warm-up
    batches = max(1, n_images // len(x))
    seconds, _ = timed(lambda: [model(x) for _ in range(batches)])
    return seconds * TEST_IMAGES / (batches * len(x))


def measure(name: str, width: int, in_shape, device, forward_images: int) -> dict:
    torch.manual_seed(0)
    a = build(name, width, 10, in_shape).to(device).eval()
    b = build(name, width, 10, in_shape).to(device).eval()
    spec = align.spec_for(a, in_shape)
    state_a, state_b = model_state(a), model_state(b)
    wm_s, wm = timed(lambda: align.weight_matching(spec, state_a, state_b))
    images = [torch.randn(500, *in_shape, device=device) for _ in range(4)]
    am_s, _ = timed(lambda: align.activation_matching(spec, a, b, images))
    fwd_s = forward_seconds(a, in_shape, forward_images, device)
    return {
        "model": f"{name} ×{width}",
        "largest group": max(spec.group_sizes),
        "groups": len(spec.group_sizes),
        "passes": wm.passes,
        "weights s": wm_s,
        "activations s": am_s,
        "forward 10k s": fwd_s,
    }


def before(spec, a, b, seed: int = align.methods.ALIGN_SEED):
    """Weight matching as it was before the incremental cost matrices (same visiting order, acceptance
    and stopping rule): (perms, passes, assignments, cost-matrix seconds, assignment seconds)."""
    rng = np.random.default_rng(seed)
    perms = spec.identity()
    params = spec.parameters
    a64 = {k: v.detach().double() for k, v in a.items() if k in params}
    b64 = {k: v.detach().double() for k, v in b.items() if k in params}
    axes_of = [[ax for ax in spec.axes_of(g) if ax[0] in params] for g in range(len(spec.group_sizes))]
    keys_of = [{key for key, _ in axes} for axes in axes_of]
    neighbours = [[h for h in range(len(axes_of)) if keys_of[g] & keys_of[h]] for g in range(len(axes_of))]
    stale = [True] * len(axes_of)
    passes = solves = 0
    cost_s = lsa_s = 0.0
    for passes in range(1, align.methods.MAX_PASSES + 1):  # noqa: B007
        changed = False
        for g in rng.permutation(len(spec.group_sizes)):
            if not stale[g]:
                continue
            stale[g] = False
            n = spec.group_sizes[g]
            t0 = time.perf_counter()
            cost = 0
            for key, dim in axes_of[g]:
                moved = spec.apply({key: b64[key]}, perms, skip=(key, dim))[key]
                pos = torch.as_tensor(spec.axes[(key, dim)].positions[g], device=moved.device)
                wa = a64[key].movedim(dim, 0)[pos.reshape(-1)].reshape(n, -1)
                wb = moved.movedim(dim, 0)[pos.reshape(-1)].reshape(n, -1)
                cost = cost + wa @ wb.T
            cost_np = cost.cpu().numpy()
            t1 = time.perf_counter()
            _, new = linear_sum_assignment(cost_np, maximize=True)
            lsa_s += time.perf_counter() - t1
            cost_s += t1 - t0
            solves += 1
            old_value = cost_np[np.arange(n), perms[g]].sum()
            new_value = cost_np[np.arange(n), new].sum()
            if new_value > old_value + 1e-12 * max(1.0, abs(old_value)):
                perms[g] = new
                changed = True
                for h in neighbours[g]:
                    stale[h] = True
        if not changed:
            break
    return perms, passes, solves, cost_s, lsa_s


def compare(args, device) -> None:
    """Weight matching now against ``before``, same process, same pair."""
    from lewc.training import checkpoints

    if args.checkpoints:
        (a, meta), (b, _) = (checkpoints.load(p, device) for p in args.checkpoints)
        in_shape, label = tuple(meta.in_shape), f"{args.checkpoints[0]} vs {args.checkpoints[1]}"
    else:
        in_shape = (1, 28, 28)
        torch.manual_seed(0)
        a, b = (build("mlp", args.width, 10, in_shape).to(device).eval() for _ in range(2))
        label = f"random MLP ×{args.width}"
    spec = align.spec_for(a, in_shape)
    sa, sb = model_state(a), model_state(b)
    calls = {"n": 0, "s": 0.0}
    real = align.methods.linear_sum_assignment

    def counted(*xs, **kw):
        t0 = time.perf_counter()
        out = real(*xs, **kw)
        calls["n"] += 1
        calls["s"] += time.perf_counter() - t0
        return out

    align.methods.linear_sum_assignment = counted
    try:
        new_s, new = timed(lambda: align.weight_matching(spec, sa, sb))
    finally:
        align.methods.linear_sum_assignment = real
    old_s, (perms, passes, solves, cost_s, lsa_s) = timed(lambda: before(spec, sa, sb))
    old_objective = align.weight_objective(spec, sa, spec.apply(sb, perms))
    same = all(np.array_equal(p, q) for p, q in zip(new.perms, perms, strict=True))
    print(f"{label}: groups {spec.group_sizes}, device {device}, threads {torch.get_num_threads()}")
    print(
        f"  before: {old_s:8.2f} s ({cost_s:.2f} s cost matrices, {lsa_s:.2f} s assignments), "
        f"{passes} passes, {solves} assignments"
    )
    print(
        f"  now:    {new_s:8.2f} s ({new_s - calls['s']:.2f} s cost matrices, {calls['s']:.2f} s assignments), "
        f"{new.passes} passes, {new.assignments} assignments"
    )
    print(
        f"  ratio before/now {old_s / new_s:.2f}; same permutations: {same}; objective {new.objective_after!r} "
        f"now, {old_objective!r} before"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--resnet-widths", default="1,2,4", help="ResNet-20 widths to time (default 1,2,4)")
    parser.add_argument("--forward-images", type=int, default=1000, help="images actually run for ResNet forwards")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--compare", action="store_true", help="weight matching now vs before, same pair")
    parser.add_argument("--width", type=int, default=4, help="--compare: MLP width (×4 = 3×2048)")
    parser.add_argument("--checkpoints", nargs=2, default=None, help="--compare: a trained pair A B")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(f"device {device}, threads {torch.get_num_threads()}, torch {torch.__version__}")
    if args.compare:
        compare(args, device)
        return
    rows = [measure("mlp", 1, (1, 28, 28), device, TEST_IMAGES)]  # 3×512, the default pair's network
    widths = [int(w) for w in args.resnet_widths.split(",")]
    rows += [measure("resnet20", w, (3, 32, 32), device, args.forward_images) for w in widths]
    head = f"{'model':14s} {'groups':>6s} {'max n':>6s} {'passes':>6s} {'WM s':>8s} {'AM s':>8s} {'fwd 10k s':>10s}"
    print(head + f" {'WM/fwd':>7s} {'AM/fwd':>7s}")
    for r in rows:
        print(
            f"{r['model']:14s} {r['groups']:6d} {r['largest group']:6d} {r['passes']:6d} {r['weights s']:8.3f} "
            f"{r['activations s']:8.3f} {r['forward 10k s']:10.3f} {r['weights s'] / r['forward 10k s']:7.3f} "
            f"{r['activations s'] / r['forward 10k s']:7.3f}"
        )
    if len(widths) >= 2:
        wm = np.array([r["weights s"] for r in rows[1:]])
        fwd = np.array([r["forward 10k s"] for r in rows[1:]])
        p_wm = np.polyfit(np.log(widths), np.log(wm), 1)[0]
        p_fwd = np.polyfit(np.log(widths), np.log(fwd), 1)[0]
        scale = 32 / widths[-1]
        print(
            f"ResNet-20 scaling: weight matching ∝ width^{p_wm:.2f}, forward ∝ width^{p_fwd:.2f}; "
            f"extrapolated to ×32 (same passes): weight matching {wm[-1] * scale**p_wm:.1f} s, "
            f"forward over 10k images {fwd[-1] * scale**p_fwd:.1f} s on this device"
        )


if __name__ == "__main__":
    main()
