"""Cost of ``verify``'s compute against the bare floor and a naive LMC pipeline, in one process.

(a) lewc: ``lewc.pipeline.analysis.analyze`` — the sweep with layer capture, calibration, barriers with
    bootstrap, statsmodels fits, conditions and ensembles;
(b) floor: only the forward passes no pipeline can avoid — BN re-estimation (BN models), one
    calib pass and one test pass per λ, no capture and no analysis;
(c) fair: the plain-PyTorch script a competent researcher writes for the same headline outputs
    (``fair_pipeline``: state-dict lerp, BN re-estimation on the same budget, one calib and one
    hooked test pass per λ, per-layer cosines with the LEWC prediction, temperature fitted on the
    stored calib logits) — lewc must be no slower, although it adds bootstrap intervals, fits,
    conditions, ensembles and verdicts. Its barriers and β are printed beside lewc's as a check.

    python benchmarks/bench_verify.py [--ckpt-a A --ckpt-b B] [--device cuda] [--n-test 10000]

Prints a/b and a/c, the whole ``python -m lewc.verify`` command's wall time beside the in-process
time, and the peak memory (max RSS; CUDA peak allocation on GPU) of (a) for two
test-set sizes, each measured in a fresh subprocess.
"""

from __future__ import annotations

import argparse
import copy
import json
import resource
import subprocess
import sys
import tempfile
import time

import torch
import torch.nn.functional as F

from lewc.pipeline.analysis import analyze
from lewc.reporting.results import barrier
from lewc.sweep.batchnorm import is_bn
from lewc.sweep.merge import Pair
from lewc.sweep.path import SweepOptions, sweep
from lewc.training import checkpoints
from lewc.training.data import load_dataset

LAMS = [i / 10 for i in range(11)]


def default_pair() -> list[str]:
    """The embedded default pair, named by the recipe exactly as ``lewc.verify`` names it."""
    from lewc.core.io import data_home
    from lewc.training.recipe import default_config

    found = [default_config("mlp", 1, None, s).checkpoint_path(data_home() / "checkpoints") for s in (0, 1)]
    if not all(checkpoints.sidecar_path(p).exists() for p in found):
        sys.exit("no default pair: run `python -m lewc.verify` once (or pass --ckpt-a/--ckpt-b)")
    return [str(p) for p in found]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def fit_temperature(calib_logits: torch.Tensor, labels: torch.Tensor) -> float:
    """β minimising the calib cross-entropy of β·logits (LBFGS on log β, from stored logits)."""
    log_beta = torch.zeros((), requires_grad=True)
    opt = torch.optim.LBFGS([log_beta], max_iter=50, line_search_fn="strong_wolfe")
    z, y = calib_logits.detach().cpu(), labels.cpu()

    def closure():
        opt.zero_grad()
        value = F.cross_entropy(z * log_beta.exp(), y)
        value.backward()
        return value

    with torch.enable_grad():
        opt.step(closure)
    return float(log_beta.exp())


@torch.no_grad()
def fair_pipeline(model_a, model_b, ds, n_test: int, bn_images: int = 10_000, batch: int = 500) -> dict:
    """What a competent researcher writes in plain PyTorch for the same headline outputs.

    Per λ: lerp the state dicts into one model, re-estimate BN on ``bn_images`` training images
    (BN models), one calib pass (logits kept) and one test pass with forward hooks on every captured
    layer (cosine of the merged layer output with the LEWC prediction from the endpoints' outputs,
    which are computed once); the temperature is fitted on the stored calib logits (LBFGS). Returns
    the barriers at λ = ½ (accuracy, raw and calibrated loss) and β per λ. No bootstrap, no fits, no
    conditions, no ensembles: lewc computes those on top.
    """
    sd_a, sd_b = model_a.state_dict(), model_b.state_dict()
    model = copy.deepcopy(model_a)
    specs = model.layers()
    test_x = ds.test.head(n_test)
    calib_y = ds.calib.y

    module_names = {id(m): n for n, m in model.named_modules()}
    hooked = [module_names[id(spec.weight_module)] for spec in specs]

    def layer_outputs(net) -> tuple[list[torch.Tensor], torch.Tensor]:
        outs: list[list[torch.Tensor]] = [[] for _ in specs]
        modules = dict(net.named_modules())
        handles = [
            modules[name].register_forward_hook(lambda m, i, o, k=k: outs[k].append(o.flatten(1).float()))
            for k, name in enumerate(hooked)
        ]
        logits = torch.cat([net(x) for x, _ in ds.batches("test", batch, n_test)])
        for h in handles:
            h.remove()
        return [torch.cat(o) for o in outs], logits

    ends = [layer_outputs(m) for m in (model_a, model_b)]
    depths = [s.depth for s in specs]
    acc, loss, loss_cal, betas = [], [], [], []
    for lam in LAMS:
        model.load_state_dict({k: torch.lerp(v, sd_b[k], lam) if v.is_floating_point() else v for k, v in sd_a.items()})
        if any(is_bn(m) for m in model.modules()):
            for m in model.modules():
                if is_bn(m):
                    m.reset_running_stats()
                    m.momentum = None
            model.train()
            for x, _ in ds.batches("train", batch, bn_images):
                model(x)
        model.eval()
        calib = torch.cat([model(x) for x, _ in ds.batches("calib", batch)]).float()
        outs, logits = layer_outputs(model)
        for k, d in enumerate(depths):  # per-layer cosine with the LEWC prediction
            pred = (1 - lam) ** d * ends[0][0][k] + lam**d * ends[1][0][k]
            F.cosine_similarity(outs[k], pred, dim=1).mean().item()
        beta = fit_temperature(calib, calib_y)
        logits = logits.float()
        acc.append(float((logits.argmax(1) == test_x.y).float().mean()))
        loss.append(float(F.cross_entropy(logits, test_x.y)))
        loss_cal.append(float(F.cross_entropy(logits * beta, test_x.y)))
        betas.append(beta)
    mid, i0, i1 = LAMS.index(0.5), 0, len(LAMS) - 1
    return {
        "acc_mid": 100 * ((acc[i0] + acc[i1]) / 2 - acc[mid]),
        "loss_mid_raw": loss[mid] - (loss[i0] + loss[i1]) / 2,
        "loss_mid_cal": loss_cal[mid] - (loss_cal[i0] + loss_cal[i1]) / 2,
        "beta": betas,
    }


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
    return Pair(model_a, model_b, meta_a, meta_b), load_dataset(meta_a.dataset, device)


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
    fair: dict = {}
    t_c = min(
        timed(lambda: fair.update(fair_pipeline(pair.model_a, pair.model_b, ds, args.n_test)), device) for _ in range(2)
    )
    res = analyze(pair, ds, LAMS, opts)
    print(
        f"pair: {args.ckpt_a} / {args.ckpt_b}; device {device}; {len(LAMS)} λ; {args.n_test} test images; "
        f"{torch.get_num_threads()} threads"
    )
    print(f"(a) lewc verify compute   {t_a:8.2f} s")
    print(f"(b) bare forward floor    {t_b:8.2f} s")
    print(f"(c) fair plain pipeline   {t_c:8.2f} s")
    print(f"a/b = {t_a / t_b:.2f}   (target ≤ 1.3)")
    print(f"a/c = {t_a / t_c:.2f}   (target ≤ 1: lewc no slower than the fair script, with its extra statistics)")
    for name in ("acc_mid", "loss_mid_raw", "loss_mid_cal"):
        print(f"  {name:13s} lewc {float(barrier(res, name)):.4f}   fair {fair[name]:.4f}")
    print(f"  β at ½        lewc {float(res.beta.sel(lam=0.5)):.3f}   fair {fair['beta'][LAMS.index(0.5)]:.3f}")
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "lewc.verify", "--ckpt-a", args.ckpt_a, "--ckpt-b", args.ckpt_b, "--out", tmp]
        cmd += ["--n-test", str(args.n_test), "--no-controls", "--align", "none", "--quiet", "--force"]
        t0 = time.perf_counter()
        subprocess.run(cmd + (["--device", args.device]), check=True, capture_output=True)
        whole = time.perf_counter() - t0
    print(f"whole command (python -m lewc.verify --no-controls --align none, imports, figures, I/O): {whole:.2f} s")
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
