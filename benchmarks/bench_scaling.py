"""How verify's cost grows: with the model (MLP ×1…×64, ResNet-20 ×1…×4), with λ and with test images.

For every model: (a) lewc's analysis (``lewc.pipeline.analysis.analyze``), (b) the bare forward floor (the
same BN re-estimation, one calib and one test pass per λ, no capture, no analysis), (c) the fair
plain-PyTorch script of ``bench_verify.py``, each timed once after a warm-up in this process, and
the peak memory (max RSS on CPU, peak allocation on CUDA) of (a) in a fresh process. MLPs are the
default-recipe Fashion-MNIST pairs (seeds 0 and 1; train them with ``python -m lewc.verify --widths
1,4,16,64`` first, missing widths are skipped); ResNet-20 pairs are independent initialisations on
synthetic CIFAR-shaped data (cost does not depend on training).

Then, on the default pair, (a) for 3, 5, 11 and 21 λ and for 2,500, 5,000 and 10,000 test images,
with a least-squares line through each (cost should be linear in both, with a small constant).

    python benchmarks/bench_scaling.py [--resnet-widths 1,2,4] [--resnet-images 500] [--mlp-widths 1,4,16,64]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys

import numpy as np
import torch
from bench_verify import LAMS, fair_pipeline, timed
from gpu_check import cifar_shaped, meta_for

from lewc.core.io import data_home
from lewc.models import build
from lewc.pipeline.analysis import analyze
from lewc.sweep.merge import Pair
from lewc.sweep.path import SweepOptions, sweep
from lewc.training import checkpoints
from lewc.training.data import load_dataset
from lewc.training.recipe import default_config


def mlp_pair(width: int, device: torch.device):
    # base width 32: the table's MLPs 3×32 … 3×2048 (×1, 4, 16, 64 of 32 units), the sweep's checkpoints
    cfgs = [default_config("mlp", width, None, s, base_width=32) for s in (0, 1)]
    paths = [c.checkpoint_path(data_home() / "checkpoints") for c in cfgs]
    if not all(checkpoints.sidecar_path(p).exists() for p in paths):
        return None
    (ma, meta_a), (mb, meta_b) = (checkpoints.load(p, device) for p in paths)
    return Pair(ma, mb, meta_a, meta_b), load_dataset(meta_a.dataset, device)


def resnet_pair(width: int, n_images: int, device: torch.device):
    torch.manual_seed(0)
    ds = cifar_shaped(n_images, n_images, device)
    models = [build("resnet20", width, 10, (3, 32, 32)).to(device).eval() for _ in range(2)]
    return Pair(models[0], models[1], meta_for(width, 0, 16), meta_for(width, 1, 16)), ds


def make(kind: str, width: int, n_images: int, device: torch.device):
    return mlp_pair(width, device) if kind == "mlp" else resnet_pair(width, n_images, device)


def options(kind: str, n_images: int, **kw) -> SweepOptions:
    n_test = None if kind == "mlp" else n_images
    return SweepOptions(n_test=n_test, bn_images=n_images, progress=False, **kw)


def child(kind: str, width: int, n_images: int, device: torch.device) -> None:
    pair, ds = make(kind, width, n_images, device)
    analyze(pair, ds, LAMS, options(kind, n_images))
    peak = (
        torch.cuda.max_memory_allocated()
        if device.type == "cuda"
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    )
    print(json.dumps({"peak_bytes": peak}))


def row(kind: str, width: int, n_images: int, device: torch.device, repeat: int) -> dict | None:
    made = make(kind, width, n_images, device)
    if made is None:
        return None
    pair, ds = made
    opts = options(kind, n_images)
    floor = options(kind, n_images, capture=False, vectorize="no")
    n_test = len(ds.test.head(opts.n_test))
    analyze(pair, ds, LAMS, options(kind, min(n_images, 500)), n_boot=10)  # warm-up
    bn = min(len(ds.train), opts.bn_images)
    t_a, t_b, t_c = (
        min(timed(fn, device) for _ in range(repeat))
        for fn in (
            lambda: analyze(pair, ds, LAMS, opts),
            lambda: sweep(pair, ds, LAMS, floor),
            lambda: fair_pipeline(pair.model_a, pair.model_b, ds, n_test, bn_images=bn),
        )
    )
    cmd = [sys.executable, __file__, "--child", kind, str(width), str(n_images), "--device", str(device)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    peak = json.loads(out.stdout.strip().splitlines()[-1])["peak_bytes"]
    return {"a": t_a, "b": t_b, "c": t_c, "n_test": n_test, "peak_mib": peak / 2**20}


def best_of_two(fn, device: torch.device) -> float:
    return min(timed(fn, device) for _ in range(2))


def linear(xs: list[float], ys: list[float]) -> str:
    slope, intercept = np.polyfit(xs, ys, 1)
    resid = np.max(np.abs(np.polyval([slope, intercept], xs) - ys) / np.asarray(ys))
    return f"{intercept:.2f} s + {slope:.3g} s × n (largest deviation from the line {100 * resid:.1f}%)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--mlp-widths", default="1,4,16,64")
    parser.add_argument("--resnet-widths", default="1,2,4")
    parser.add_argument("--resnet-images", type=int, default=500, help="test = BN = calib images for ResNets")
    parser.add_argument("--repeat", type=int, default=2, help="timed runs per MLP row (the minimum is shown)")
    parser.add_argument("--resnet-repeat", type=int, default=1, help="timed runs per ResNet row (slow on CPU)")
    parser.add_argument("--skip-linearity", action="store_true")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    device = torch.device(args.device)
    if args.child:
        child(args.child[0], int(args.child[1]), int(args.child[2]), device)
        return
    print(f"device {device}; {torch.get_num_threads()} threads; torch {torch.__version__}; {len(LAMS)} λ")
    print("| model | test images | verify (a) | floor (b) | a/b | fair script (c) | a/c | peak memory |")
    print("|---|---|---|---|---|---|---|---|")
    plan = [("mlp", int(w)) for w in args.mlp_widths.split(",") if w] + [
        ("resnet20", int(w)) for w in args.resnet_widths.split(",") if w
    ]
    for kind, width in plan:
        r = row(kind, width, args.resnet_images, device, args.repeat if kind == "mlp" else args.resnet_repeat)
        if r is None:
            print(f"| {kind} ×{width} | no default-recipe pair trained: skipped | | | | | | |", flush=True)
            continue
        print(
            f"| {'MLP' if kind == 'mlp' else 'ResNet-20'} ×{width} | {r['n_test']:,} | {r['a']:.2f} s | {r['b']:.2f} s "
            f"| {r['a'] / r['b']:.2f} | {r['c']:.2f} s | {r['a'] / r['c']:.2f} | {r['peak_mib']:,.0f} MiB |",
            flush=True,
        )
    if args.skip_linearity:
        return
    made = mlp_pair(16, device)
    if made is None:
        return
    pair, ds = made
    grids = {n: [i / (n - 1) for i in range(n)] for n in (3, 5, 11, 21)}  # odd counts: every grid holds λ = ½
    # best of two: the first run of a new λ count also measures (and caches) vmap-or-loop for it
    t_lam = [
        best_of_two(lambda g=g: analyze(pair, ds, g, SweepOptions(progress=False)), device) for g in grids.values()
    ]
    print(
        "default pair, 10,000 test images, λ count → verify (a): "
        + ", ".join(f"{n}: {t:.2f} s" for n, t in zip(grids, t_lam, strict=True))
    )
    print(f"  fit: {linear(list(grids), t_lam)}")
    sizes = [2500, 5000, 10000]
    t_n = [
        best_of_two(lambda n=n: analyze(pair, ds, LAMS, SweepOptions(n_test=n, progress=False)), device) for n in sizes
    ]
    print(
        "default pair, 11 λ, test images → verify (a): "
        + ", ".join(f"{n:,}: {t:.2f} s" for n, t in zip(sizes, t_n, strict=True))
    )
    print(f"  fit: {linear(sizes, t_n)}")


if __name__ == "__main__":
    main()
