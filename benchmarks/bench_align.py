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
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--resnet-widths", default="1,2,4", help="ResNet-20 widths to time (default 1,2,4)")
    parser.add_argument("--forward-images", type=int, default=1000, help="images actually run for ResNet forwards")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(f"device {device}, threads {torch.get_num_threads()}, torch {torch.__version__}")
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
