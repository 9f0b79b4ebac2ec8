"""Cost of ``verify``'s compute against the bare floor and a naive LMC pipeline, in one process.

(a) lewc: ``lewc.analysis.analyze`` — the sweep with layer capture, calibration, barriers with
    bootstrap, statsmodels fits, conditions and ensembles;
(b) floor: only the forward passes no pipeline can avoid — BN re-estimation (BN models), one
    calib pass and one test pass per λ, no capture and no analysis;
(c) naive, as public LMC repositories do it: per λ copy the model, load the interpolated
    state_dict, re-estimate BN over a full training epoch, evaluate; then a separate calib pass per
    temperature candidate, a separate test pass per layer for its capture (forward hook) and
    separate endpoint passes for the ensemble.

    python benchmarks/bench_verify.py [--ckpt-a A --ckpt-b B] [--device cuda] [--n-test 10000]

Prints a/b and c/a, and the peak memory (max RSS; CUDA peak allocation on GPU) of (a) for two
test-set sizes, each measured in a fresh subprocess.
"""

from __future__ import annotations

import argparse
import copy
import json
import resource
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

from lewc import checkpoints
from lewc.analysis import analyze
from lewc.batchnorm import is_bn
from lewc.data import load_dataset
from lewc.merge import Pair
from lewc.path import SweepOptions, sweep

LAMS = [i / 10 for i in range(11)]
TEMPERATURES = [0.25 * k for k in range(1, 41)]  # a typical grid search: 40 candidates


def default_pair() -> list[str]:
    """The embedded default pair, named by the recipe exactly as ``lewc.verify`` names it."""
    from lewc.data import data_home
    from lewc.recipe import default_config

    found = [default_config("mlp", 16, None, s).checkpoint_path(data_home() / "checkpoints") for s in (0, 1)]
    if not all(checkpoints.sidecar_path(p).exists() for p in found):
        sys.exit("no default pair: run `python -m lewc.verify` once (or pass --ckpt-a/--ckpt-b)")
    return [str(p) for p in found]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


@torch.no_grad()
def naive_pipeline(model_a, model_b, ds, n_test: int, batch: int = 500) -> None:
    sd_a, sd_b = model_a.state_dict(), model_b.state_dict()
    test = ds.test.head(n_test)
    for lam in LAMS:
        model = copy.deepcopy(model_a)
        model.load_state_dict({k: torch.lerp(v, sd_b[k], lam) if v.is_floating_point() else v for k, v in sd_a.items()})
        if any(is_bn(m) for m in model.modules()):
            for m in model.modules():
                if is_bn(m):
                    m.reset_running_stats()
                    m.momentum = None
            model.train()
            for x, _ in ds.batches("train", batch):
                model(x)
        model.eval()
        logits = torch.cat([model(x) for x, _ in ds.batches("test", batch, n_test)])
        F.cross_entropy(logits, test.y)
        for t in TEMPERATURES:  # one calib pass per candidate temperature
            torch.stack([F.cross_entropy(model(x) / t, y) for x, y in ds.batches("calib", batch)]).mean().item()
        for spec in model.layers():  # one pass per captured layer
            acc: list[torch.Tensor] = []

            def hook(module, inputs, output, acc=acc):
                acc.append(output.float().square().sum())

            handle = spec.weight_module.register_forward_hook(hook)
            for x, _ in ds.batches("test", batch, n_test):
                model(x)
            handle.remove()
        for endpoint in (model_a, model_b):  # endpoint passes for the ensemble
            torch.cat([endpoint(x) for x, _ in ds.batches("test", batch, n_test)])


def timed(fn, device) -> float:
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t0


def peak_memory_child(args) -> None:
    device = torch.device(args.device)
    pair, ds = load(args, device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    analyze(pair, ds, LAMS, SweepOptions(n_test=args.child, progress=False))
    peak = (
        torch.cuda.max_memory_allocated()
        if device.type == "cuda"
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    )
    print(json.dumps({"n_test": args.child, "peak_bytes": peak}))


def load(args, device):
    model_a, meta_a = checkpoints.load(args.ckpt_a, device)
    model_b, meta_b = checkpoints.load(args.ckpt_b, device)
    return Pair(model_a, model_b, meta_a, meta_b), load_dataset(meta_a["dataset"], device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt-a")
    parser.add_argument("--ckpt-b")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--n-test", type=int, default=10_000)
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not args.ckpt_a:
        args.ckpt_a, args.ckpt_b = default_pair()
    if args.child:
        peak_memory_child(args)
        return
    device = torch.device(args.device)
    pair, ds = load(args, device)
    opts = SweepOptions(n_test=args.n_test, progress=False)
    analyze(pair, ds, LAMS, SweepOptions(n_test=500, progress=False), n_boot=10)  # warm-up
    t_a = min(timed(lambda: analyze(pair, ds, LAMS, opts), device) for _ in range(2))
    floor_opts = SweepOptions(n_test=args.n_test, progress=False, capture=False, vectorize="no")
    t_b = min(timed(lambda: sweep(pair, ds, LAMS, floor_opts), device) for _ in range(2))
    t_c = timed(lambda: naive_pipeline(pair.model_a, pair.model_b, ds, args.n_test), device)
    print(f"pair: {args.ckpt_a} / {args.ckpt_b}; device {device}; {len(LAMS)} λ; {args.n_test} test images")
    print(f"(a) lewc verify compute   {t_a:8.2f} s")
    print(f"(b) bare forward floor    {t_b:8.2f} s")
    print(f"(c) naive pipeline        {t_c:8.2f} s")
    print(f"a/b = {t_a / t_b:.2f}   (target ≤ 1.3)")
    print(f"c/a = {t_c / t_a:.2f}   (target ≥ 5)")
    for n in (args.n_test // 4, args.n_test):
        out = subprocess.run(
            [
                sys.executable,
                __file__,
                "--ckpt-a",
                args.ckpt_a,
                "--ckpt-b",
                args.ckpt_b,
                "--device",
                args.device,
                "--child",
                str(n),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        peak = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"peak memory of (a) with {n:6d} test images: {peak['peak_bytes'] / 2**20:8.1f} MiB")


if __name__ == "__main__":
    main()
