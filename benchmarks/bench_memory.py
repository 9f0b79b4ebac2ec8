"""Does verify's peak memory grow with the number of λ or of test images? Each cell in a fresh process.

A ResNet-20 pair (independent initialisations, BatchNorm; memory does not depend on training) on
synthetic CIFAR-shaped data (3 × 32 × 32) is analysed with ``lewc.pipeline.analysis.analyze`` — capture, calibration,
fits, bootstrap — for 3 and 11 λ and for two test-set sizes; the child reports its peak resident
memory (``ru_maxrss``) and, on CUDA, the peak allocated GPU memory. The baseline column is the same
child after building the models and loading the data but before the analysis, so the difference is
what the analysis itself holds. Beside it, ``lewc.sweep.memory.estimate_sweep_peak``: the same peak
computed on the meta device (nothing allocated), and that computation for ResNet-20 ×32 at the
default batch of 500 — the paper's widest model, which must fit a 40 GiB budget.

    python benchmarks/bench_memory.py [--device cuda] [--width 1] [--images 500,1000]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys

import torch


def child(width: int, n_lams: int, n_images: int, device: str) -> None:
    from gpu_check import cifar_shaped

    from lewc.models import build
    from lewc.pipeline.analysis import analyze
    from lewc.sweep.merge import Pair
    from lewc.sweep.path import SweepOptions
    from lewc.training.checkpoints import CheckpointMeta

    torch.manual_seed(0)
    ds = cifar_shaped(1000, n_images, torch.device(device))
    in_shape = ds.info.in_shape
    models = [build("resnet20", width, 10, in_shape).to(device).eval() for _ in range(2)]
    meta = {
        "model": "resnet20",
        "width": width,
        "base_width": 16,
        "depth": None,
        "norm": "bn",
        "bias": True,
        "num_classes": 10,
        "in_shape": list(in_shape),
        "dataset": "cifar10",
    }
    metas = [CheckpointMeta.record(**meta, seed=seed, sha256=f"{seed:064x}") for seed in (0, 1)]
    pair = Pair(models[0], models[1], *metas)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    lams = [i / (n_lams - 1) for i in range(n_lams)]
    analyze(pair, ds, lams, SweepOptions(n_test=n_images, progress=False, vectorize="no"))
    out = {"rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "base_mib": base}
    if device.startswith("cuda"):
        out["gpu_peak_mib"] = torch.cuda.max_memory_allocated() / 2**20
    print(json.dumps(out))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--width", type=int, default=1)
    parser.add_argument("--images", default="500,1000", help="test-set sizes")
    parser.add_argument("--child", nargs=3, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], args.child[1], args.child[2], args.device)
        return
    from lewc.sweep.memory import estimate_sweep_peak

    print(f"ResNet-20 ×{args.width}, device {args.device}, threads {torch.get_num_threads()}")
    print(
        f"{'λ':>3s} {'images':>7s} {'peak RSS MiB':>13s} {'before analysis':>16s} {'analysis adds':>14s} "
        f"{'meta estimate':>14s}"
    )
    for n_lams in (3, 11):
        for n_images in (int(v) for v in args.images.split(",")):
            cmd = [sys.executable, __file__, "--device", args.device, "--child", str(args.width), str(n_lams)]
            proc = subprocess.run([*cmd, str(n_images)], capture_output=True, text=True, check=True)
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            extra = f"  GPU peak {r['gpu_peak_mib']:.0f} MiB" if "gpu_peak_mib" in r else ""
            est = estimate_sweep_peak("resnet20", args.width, (3, 32, 32), batch=min(500, n_images), n_lams=n_lams)
            print(
                f"{n_lams:3d} {n_images:7d} {r['rss_mib']:13.0f} {r['base_mib']:16.0f} "
                f"{r['rss_mib'] - r['base_mib']:14.0f} {est.peak / 2**20:14.0f}{extra}",
                flush=True,
            )
    for width in (8, 16, 32):
        est = estimate_sweep_peak("resnet20", width, (3, 32, 32), batch=500, n_lams=11)
        parts = ", ".join(f"{k} {v:.2f}" for k, v in est.gib().items() if k not in ("peak",))
        head = f"meta estimate ResNet-20 ×{width}, batch 500, 11 λ: peak {est.peak / 2**30:.1f} GiB"
        print(f"{head} ({est.phase}; {parts})")


if __name__ == "__main__":
    main()
