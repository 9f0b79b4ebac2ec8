"""The GPU check: training throughput and MFU, verify's cost against its forward floor, and the headline run.

One script, no internet, synthetic CIFAR-shaped data (throughput and memory do not depend on pixel
values). On one H100/H200 it takes about two minutes:

1. training throughput of ResNet-20 ×16 with lewc's trainer step (channels_last, bf16 autocast, fused
   SGD), ``torch.compile`` off and on: ``WARMUP_STEPS`` untimed steps, then ``TIMED_STEPS`` timed ones;
   MFU against the device's own dense bf16 peak (``PEAK_TFLOPS``, looked up by the device's name;
   ``--peak-tflops`` overrides, an unknown device falls back to the H100's with a note), FLOPs by
   ``lewc.training.checkpoints.count_flops_per_image`` (×3 for forward + backward);
2. verify on a ResNet-20 ×8 pair (independent initialisations: cost does not depend on training):
   (a) ``lewc.pipeline.analysis.analyze`` with capture, calibration, fits and bootstrap, against (b) the
   forward floor — BN re-estimation plus one calib and one test pass per λ, nothing else. Both are timed
   alike: each warmed up once on a small subset, then timed once, synchronised, with its own peak memory;
   the fp32 throughput of (b) against the fp32 peak (the analysis runs with TF32 off);
3. the headline run directly: ResNet-20 ×32 with both controls (``lewc.pipeline.pair.run_control``) at
   3 λ on ``HEADLINE_TEST`` images, each sweep at the compute batch of ``lewc.sweep.memory.plan_run``'s plan
   (the 2× wide positive control's own, smaller one), each sweep's measured peak memory beside the plan's;
   its host syncs per λ are not measured here (tests/test_device_budgets.py does);
4. weight matching of the ×8 pair.

``--smoke`` runs every step at tiny sizes on CPU so CI keeps the script working; its numbers mean
nothing.

    python benchmarks/gpu_check.py               # on a GPU
    python benchmarks/gpu_check.py --smoke       # anywhere, seconds
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import torch

from lewc import align
from lewc.models import build
from lewc.pipeline.analysis import analyze
from lewc.pipeline.memplan import builder_from_meta
from lewc.pipeline.pair import CONTROL_NAMES, run_control
from lewc.pipeline.request import analysis_options
from lewc.sweep.memory import plan_run
from lewc.sweep.merge import Pair, model_state
from lewc.sweep.path import SweepOptions, sweep
from lewc.training import checkpoints
from lewc.training.data import DeviceDataset, Split, dataset_info

LAMS = [i / 10 for i in range(11)]
HEADLINE_LAMS = [0.0, 0.5, 1.0]
SMOKE_LAMS = [0.0, 0.5, 1.0]
BASE_WIDTH = 16  # ResNet-20's own; --smoke uses 4 to stay in seconds on a CPU
WARMUP_STEPS, TIMED_STEPS, TRAIN_BATCH = 10, 40, 128
HEADLINE_TEST = 500
# dense peak TFLOP/s by device name (first match wins): bf16 tensor cores, and fp32 without TF32
PEAK_TFLOPS = {
    "H100 PCIe": {"bf16": 756.0, "fp32": 51.0},
    "H200": {"bf16": 989.0, "fp32": 67.0},
    "H100": {"bf16": 989.0, "fp32": 67.0},
    "A100": {"bf16": 312.0, "fp32": 19.5},
}
FALLBACK = "H100"


def device_peaks(name: str, override: float | None = None) -> dict:
    """The device's peaks from ``PEAK_TFLOPS`` by its name; ``override`` replaces the bf16 one."""
    match = next((k for k in PEAK_TFLOPS if k.lower() in name.lower()), None)
    peaks = dict(PEAK_TFLOPS[match or FALLBACK])
    source = f"table ({match})" if match else f"unknown device: {FALLBACK}'s peaks assumed"
    if override:
        peaks["bf16"], source = override, "--peak-tflops"
    return {**peaks, "source": source}


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device: torch.device) -> tuple[float, object]:
    synchronize(device)
    start = time.perf_counter()
    out = fn()
    synchronize(device)
    return time.perf_counter() - start, out


def measured(fn, device: torch.device) -> tuple[float, float | None, object]:
    """(seconds, peak GiB allocated during ``fn`` or None on the CPU, result)."""
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    seconds, out = timed(fn, device)
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None
    return seconds, peak, out


def cifar_shaped(n_train: int, n_test: int, device: torch.device) -> DeviceDataset:
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (n_train + n_test, 3, 32, 32), dtype=torch.uint8, generator=gen)
    y = torch.randint(0, 10, (n_train + n_test,), generator=gen)
    train_split = Split(x[:n_train].to(device), y[:n_train].to(device))
    test_split = Split(x[n_train:].to(device), y[n_train:].to(device))
    return DeviceDataset(dataset_info("cifar10"), train_split, test_split, test_split, device)


def meta_for(width: int, seed: int, base_width: int) -> checkpoints.CheckpointMeta:
    """A CIFAR-10 ResNet-20 endpoint's record for models built here (no checkpoint behind them)."""
    info = dataset_info("cifar10")
    return checkpoints.CheckpointMeta.record(
        **{
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
    )


def make_pair(width: int, base_width: int, device: torch.device) -> Pair:
    torch.manual_seed(0)
    models = [build("resnet20", width, 10, (3, 32, 32), base_width=base_width).to(device).eval() for _ in range(2)]
    return Pair(models[0], models[1], meta_for(width, 0, base_width), meta_for(width, 1, base_width))


def training_throughput(
    width: int, ds: DeviceDataset, device: torch.device, compile_model: bool, peak: float, base_width: int, steps: int
) -> dict:
    """lewc's trainer step (channels_last, bf16 autocast, fused SGD): warm-up, then ``steps`` timed steps."""
    model = build("resnet20", width, 10, (3, 32, 32), base_width=base_width).to(device)
    cuda = device.type == "cuda"
    if cuda:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, **({"fused": True} if cuda else {}))
    net = torch.compile(model) if compile_model else model
    gen = torch.Generator().manual_seed(0)
    idx = torch.randint(0, len(ds.train), (TRAIN_BATCH,), generator=gen).to(device)
    x = ds.normalize(ds.train.x[idx])
    x = x.contiguous(memory_format=torch.channels_last) if cuda else x
    y = ds.train.y[idx]

    def step():
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=cuda):
            loss = torch.nn.functional.cross_entropy(net(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(WARMUP_STEPS if not compile_model else 2 * WARMUP_STEPS):
        step()
    seconds, _ = timed(lambda: [step() for _ in range(steps)], device)
    rate = steps * TRAIN_BATCH / seconds
    with torch.device("meta"):
        meta_model = build("resnet20", width, 10, (3, 32, 32), base_width=base_width)
    flops = 3 * checkpoints.count_flops_per_image(meta_model, (3, 32, 32))
    return {"steps": steps, "images_per_s": rate, "tflops": rate * flops / 1e12, "mfu": rate * flops / (peak * 1e12)}


def forward_flops(width: int, base_width: int) -> float:
    with torch.device("meta"):
        model = build("resnet20", width, 10, (3, 32, 32), base_width=base_width)
    return float(checkpoints.count_flops_per_image(model, (3, 32, 32)))


def verify_cost(width: int, ds: DeviceDataset, device: torch.device, n_test: int, lams, base_width: int, peaks) -> dict:
    """(a) the whole analysis and (b) its forward floor, timed alike (see module doc)."""
    pair = make_pair(width, base_width, device)
    bn_images = min(len(ds.train), 10_000)
    full = SweepOptions(n_test=n_test, bn_images=bn_images, progress=False)
    floor = SweepOptions(n_test=n_test, bn_images=bn_images, progress=False, capture=False, vectorize="no")
    small = {"n_test": min(n_test, 100), "bn_images": min(bn_images, 500)}
    runs = {
        "floor": lambda o: sweep(pair, ds, lams, o),
        "verify": lambda o: analyze(pair, ds, lams, o),
    }
    out: dict = {"width": width, "lams": len(lams), "n_test": n_test}
    for name, opts in (("floor", floor), ("verify", full)):
        warm = SweepOptions(**{**opts.__dict__, **small})
        runs[name](warm)  # warm-up: kernel selection and allocator growth are not the pipeline's cost
        out[f"{name}_s"], out[f"{name}_peak_gib"], _ = measured(lambda n=name, o=opts: runs[n](o), device)
    out["a_over_b"] = out["verify_s"] / out["floor_s"]
    n_images = len(lams) * (bn_images // 500 * 500 + len(ds.calib) + n_test)
    out["floor_fp32_tflops"] = n_images * forward_flops(width, base_width) / out["floor_s"] / 1e12
    out["floor_fp32_mfu"] = out["floor_fp32_tflops"] / peaks["fp32"]
    spec = align.spec_for(pair.model_a, (3, 32, 32))
    out["weight_matching_s"], result = timed(
        lambda: align.weight_matching(spec, model_state(pair.model_a), model_state(pair.model_b)), device
    )
    out["weight_matching_passes"] = result.passes
    return out


def headline(width: int, ds: DeviceDataset, device: torch.device, lams, base_width: int, n_test: int) -> dict:
    """ResNet-20 ×``width`` with both controls, run directly, each sweep at the compute batch the memory plan
    gives it (the positive control's own: ``plan_run``); each sweep's measured peak beside the plan."""
    pair = make_pair(width, base_width, device)
    bn_images = min(len(ds.train), 500)
    opts = SweepOptions(n_test=n_test, bn_images=bn_images, progress=False)
    options = analysis_options(lams, n_test, bn_images, True, "none")
    held = {id(t): t for s in (ds.train, ds.calib, ds.test) for t in (s.x, s.y)}
    dataset_bytes = sum(t.numel() * t.element_size() for t in held.values())
    plan = plan_run(
        builder_from_meta(pair.meta_a), (3, 32, 32), opts.batch_size, len(lams), True, ("none",), dataset_bytes
    )
    out: dict = {"width": width, "lams": len(lams), "n_test": n_test, "bn_images": bn_images}
    out["main_s"], out["main_peak_gib"], _ = measured(lambda: analyze(pair, ds, lams, opts), device)
    absent: dict = {}
    controls, out["controls_s"], out["controls_batch"], peaks = {}, 0.0, {}, []
    for name in CONTROL_NAMES:
        control_opts = dataclasses.replace(opts, batch_size=plan.batch_for(f"{name} control"))
        seconds, peak, res = measured(
            lambda n=name, o=control_opts: run_control(n, pair, ds, options, o, absent), device
        )
        out["controls_s"] += seconds
        out["controls_batch"][name], out[f"{name}_control_peak_gib"] = control_opts.batch_size, peak
        peaks.append(peak)
        if res is not None:
            controls[name] = res
    out["controls_peak_gib"] = None if None in peaks else max(peaks)
    out["controls_run"], out["controls_absent"] = sorted(controls), absent
    out["plan_gib"] = {k: v / 2**30 for k, v in plan.phases.items()}
    out["plan_batches"] = dict(plan.batches)
    out["plan_peak_gib"] = plan.peak / 2**30
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes on CPU: checks the script, not the GPU")
    parser.add_argument("--peak-tflops", type=float, help="dense bf16 peak of the GPU (default: by its name)")
    parser.add_argument("--out", type=Path, help="also write the numbers as JSON here")
    args = parser.parse_args()
    if args.smoke:
        device = torch.device("cpu")
        train_widths, verify_width, head_width, n_train, n_test = [1], 1, 2, 600, 50
        lams, base_width, steps, head_test = SMOKE_LAMS, 4, 2, 50
        compiles = (False,)
    else:
        if not torch.cuda.is_available():
            raise SystemExit("gpu_check needs CUDA; use --smoke to check the script on CPU")
        device = torch.device("cuda")
        train_widths, verify_width, head_width, n_train, n_test = [16], 8, 32, 10_000, 2_000
        lams, base_width, steps, head_test = LAMS, BASE_WIDTH, TIMED_STEPS, HEADLINE_TEST
        compiles = (False, True)
    name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu (smoke)"
    peaks = device_peaks(name, args.peak_tflops)
    report: dict = {"device": name, "torch": torch.__version__, "peak_tflops": peaks}
    print(f"device {name}, torch {torch.__version__}, peaks {peaks}", flush=True)

    def save() -> None:  # after every step: a step that runs out of time still leaves the earlier ones
        if args.out:
            args.out.write_text(json.dumps(report, indent=2))

    ds = cifar_shaped(n_train, n_test, device)
    report["training"] = []
    for width in train_widths:
        for compiled in compiles:
            row = {"width": width, "compile": compiled}
            row |= training_throughput(width, ds, device, compiled, peaks["bf16"], base_width, steps)
            report["training"].append(row)
            save()
            print(
                f"train resnet20 ×{width} compile={compiled}: {row['images_per_s']:.0f} img/s over {steps} steps, "
                f"{row['tflops']:.1f} TFLOP/s, MFU {100 * row['mfu']:.1f}% of {peaks['bf16']:.0f}",
                flush=True,
            )
    row = verify_cost(verify_width, ds, device, n_test, lams, base_width, peaks)
    report["verify"] = row
    save()
    print(
        f"verify resnet20 ×{verify_width}: (a) {row['verify_s']:.2f} s, (b) floor {row['floor_s']:.2f} s, "
        f"a/b {row['a_over_b']:.2f}, peaks {row['verify_peak_gib']} / {row['floor_peak_gib']} GiB, floor "
        f"{row['floor_fp32_tflops']:.1f} fp32 TFLOP/s; weight matching {row['weight_matching_s']:.2f} s "
        f"({row['weight_matching_passes']} passes)",
        flush=True,
    )
    head_ds = cifar_shaped(max(500, head_test), head_test, device)
    row = headline(head_width, head_ds, device, HEADLINE_LAMS, base_width, head_test)
    report["headline"] = row
    save()
    print(
        f"headline resnet20 ×{head_width} with controls ({len(HEADLINE_LAMS)} λ, {head_test} images): main "
        f"{row['main_s']:.1f} s, peak {row['main_peak_gib']} GiB; controls {row['controls_s']:.1f} s, peaks "
        f"positive {row['positive_control_peak_gib']} / negative {row['negative_control_peak_gib']} GiB at compute "
        f"batches {row['controls_batch']}; plan {row['plan_peak_gib']:.2f} GiB "
        + json.dumps({k: round(v, 2) for k, v in row["plan_gib"].items()}),
        flush=True,
    )


if __name__ == "__main__":
    main()
