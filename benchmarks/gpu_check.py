"""The GPU check: training throughput and MFU, verify's cost against its forward floor, alignment, memory.

One script, no internet, synthetic CIFAR-shaped data (throughput and memory do not depend on pixel
values; CIFAR-10 is used by nothing here). On one H100/H200 the full run takes a few minutes:

1. training throughput of ResNet-20 ×4 and ×16 with lewc's trainer step (channels_last, bf16
   autocast, fused SGD), ``torch.compile`` off and on, and the bf16 MFU against ``--peak-tflops``
   (989 for H100/H200 dense bf16) with FLOPs counted by ``lewc.training.checkpoints.count_flops_per_image``
   (×3 for forward + backward);
2. verify on a ResNet-20 ×8 pair (independent initialisations: cost does not depend on training):
   (a) ``lewc.pipeline.analysis.analyze`` with capture, calibration, fits and bootstrap, against (b) the
   forward floor — BN re-estimation plus one calib and one test pass per λ, nothing else — their
   ratio, peak GPU memory of each, and the host↔device copies per λ counted by the CUDA profiler;
3. weight matching of the ×8 pair;
4. an extrapolation of (a), (b) and memory to ×32 from ×4 and ×8 (cost ∝ width^p fitted on the two
   points; the assumption is that p stays constant, which holds once kernels saturate the GPU).

``--smoke`` runs every step at tiny sizes on CPU so CI keeps the script working; its numbers mean
nothing.

    python benchmarks/gpu_check.py               # on a GPU
    python benchmarks/gpu_check.py --smoke       # anywhere, seconds
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from lewc import align
from lewc.models import build
from lewc.pipeline.analysis import analyze
from lewc.sweep.merge import Pair, model_state
from lewc.sweep.path import SweepOptions, sweep
from lewc.training import checkpoints
from lewc.training.data import DeviceDataset, Split, dataset_info
from lewc.training.recipe import default_config
from lewc.training.train import train

LAMS = [i / 10 for i in range(11)]
SMOKE_LAMS = [0.0, 0.5, 1.0]
BASE_WIDTH = 16  # ResNet-20's own; --smoke uses 4 to stay in seconds on a CPU


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device: torch.device) -> tuple[float, object]:
    synchronize(device)
    start = time.perf_counter()
    out = fn()
    synchronize(device)
    return time.perf_counter() - start, out


def cifar_shaped(n_train: int, n_test: int, device: torch.device) -> DeviceDataset:
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (n_train + n_test, 3, 32, 32), dtype=torch.uint8, generator=gen)
    y = torch.randint(0, 10, (n_train + n_test,), generator=gen)
    train_split = Split(x[:n_train].to(device), y[:n_train].to(device))
    test_split = Split(x[n_train:].to(device), y[n_train:].to(device))
    return DeviceDataset(dataset_info("cifar10"), train_split, test_split, test_split, device)


def meta_for(width: int, seed: int, base_width: int) -> dict:
    info = dataset_info("cifar10")
    return {
        "model": "resnet20",
        "width": width,
        "base_width": base_width,
        "depth": None,
        "norm": "bn",
        "bias": True,
        "num_classes": info.num_classes,
        "in_shape": list(info.in_shape),
        "dataset": "cifar10",
        "seed": seed,
        "sha256": f"{seed:064x}",
    }


def training_throughput(
    width: int, ds: DeviceDataset, device: torch.device, compile_model: bool, peak: float, base_width: int
):
    cfg = default_config("resnet20", width, "cifar10", 0, epochs=1, base_width=base_width)
    with tempfile.TemporaryDirectory() as tmp:
        path = train(cfg, tmp, str(device), progress=False, dataset=ds, compile_model=compile_model)
        history = checkpoints.read_meta(path)["history"]
    rate = history[-1]["images_per_s"]
    with torch.device("meta"):
        model = build("resnet20", width, 10, (3, 32, 32), base_width=base_width)
    flops = 3 * checkpoints.count_flops_per_image(model, (3, 32, 32))
    return {"images_per_s": rate, "tflops": rate * flops / 1e12, "mfu": rate * flops / (peak * 1e12)}


def copies_per_lam(
    pair: Pair, ds: DeviceDataset, lams: list[float], options: SweepOptions, device: torch.device
) -> float | None:
    """Host↔device memcpy events of one sweep, per λ (CUDA profiler); None on CPU."""
    if device.type != "cuda":
        return None
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        sweep(pair, ds, lams, options)
    names = [e.name for e in prof.events()]
    copies = sum(1 for n in names if "Memcpy DtoH" in n or "Memcpy HtoD" in n)
    return copies / len(lams)


def verify_cost(
    width: int, ds: DeviceDataset, device: torch.device, n_test: int, lams: list[float], base_width: int
) -> dict:
    torch.manual_seed(0)
    in_shape = (3, 32, 32)
    models = [build("resnet20", width, 10, in_shape, base_width=base_width).to(device).eval() for _ in range(2)]
    pair = Pair(models[0], models[1], meta_for(width, 0, base_width), meta_for(width, 1, base_width))
    bn_images = min(len(ds.train), 10_000)
    full = SweepOptions(n_test=n_test, bn_images=bn_images, progress=False)
    floor = SweepOptions(n_test=n_test, bn_images=bn_images, progress=False, capture=False, vectorize="no")
    out: dict = {"width": width}
    sweep(pair, ds, lams, floor)  # warm-up: kernel selection and allocator growth are not the pipeline's cost
    for name, fn in (
        ("floor_s", lambda: sweep(pair, ds, lams, floor)),
        ("verify_s", lambda: analyze(pair, ds, lams, full)),
    ):
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        out[name], _ = timed(fn, device)
        if device.type == "cuda":
            out[name.replace("_s", "_peak_gib")] = torch.cuda.max_memory_allocated() / 2**30
    out["a_over_b"] = out["verify_s"] / out["floor_s"]
    out["copies_per_lam"] = copies_per_lam(pair, ds, lams, full, device)
    spec = align.spec_for(models[0], in_shape)
    out["weight_matching_s"], result = timed(
        lambda: align.weight_matching(spec, model_state(models[0]), model_state(models[1])), device
    )
    out["weight_matching_passes"] = result.passes
    return out


def extrapolate(rows: list[dict], key: str, to_width: int = 32) -> float | None:
    pts = [(r["width"], r[key]) for r in rows if r.get(key)]
    if len(pts) < 2:
        return None
    (w0, v0), (w1, v1) = pts[-2], pts[-1]
    p = np.log(v1 / v0) / np.log(w1 / w0)
    return float(v1 * (to_width / w1) ** p)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes on CPU: checks the script, not the GPU")
    parser.add_argument("--peak-tflops", type=float, default=989.0, help="dense bf16 peak of the GPU (H100/H200)")
    parser.add_argument("--out", type=Path, help="also write the numbers as JSON here")
    args = parser.parse_args()
    if args.smoke:
        device = torch.device("cpu")
        train_widths, verify_widths, n_train, n_test = [1], [1, 2], 128, 50
        lams, base_width = SMOKE_LAMS, 4
    else:
        if not torch.cuda.is_available():
            raise SystemExit("gpu_check needs CUDA; use --smoke to check the script on CPU")
        device = torch.device("cuda")
        train_widths, verify_widths, n_train, n_test = [4, 16], [4, 8], 50_000, 10_000
        lams, base_width = LAMS, BASE_WIDTH
    ds = cifar_shaped(n_train, n_test, device)
    report: dict = {"device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu (smoke)"}
    report["torch"] = torch.__version__
    print(f"device {report['device']}, torch {torch.__version__}", flush=True)
    report["training"] = []
    for width in train_widths:
        for compiled in (False, True) if not args.smoke else (False,):
            row = {"width": width, "compile": compiled}
            row |= training_throughput(width, ds, device, compiled, args.peak_tflops, base_width)
            report["training"].append(row)
            print(
                f"train resnet20 ×{width} compile={compiled}: {row['images_per_s']:.0f} img/s, "
                f"{row['tflops']:.1f} TFLOP/s, MFU {100 * row['mfu']:.1f}%",
                flush=True,
            )
    report["verify"] = []
    for width in verify_widths:
        row = verify_cost(width, ds, device, n_test, lams, base_width)
        report["verify"].append(row)
        print(
            f"verify resnet20 ×{width}: (a) {row['verify_s']:.2f} s, (b) floor {row['floor_s']:.2f} s, "
            f"a/b {row['a_over_b']:.2f}, peak {row.get('verify_peak_gib', float('nan')):.2f} GiB, "
            f"copies/λ {row['copies_per_lam']}, weight matching {row['weight_matching_s']:.2f} s "
            f"({row['weight_matching_passes']} passes)",
            flush=True,
        )
    report["extrapolated_x32"] = {
        key: extrapolate(report["verify"], key)
        for key in ("verify_s", "floor_s", "verify_peak_gib", "weight_matching_s")
    }
    print("extrapolated to ×32 (power law through the two largest widths): " + json.dumps(report["extrapolated_x32"]))
    if args.out:
        args.out.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
