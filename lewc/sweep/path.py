"""The path sweep: one forward pass per λ over each split serves every metric.

Order of work (docs/conventions.md):

1. BN models: re-estimate running statistics for every λ on the same fixed training images;
2. ``calib`` split: logits per λ (for temperature calibration);
3. ``test`` split, batch by batch: the endpoints' (λ = 0, 1) layer records first, then every
   λ's logits and layer records, reduced at once by ``LayerStatistics``.

Logits of both splits are kept (λ × image × class), so calibration, barriers and the ensemble
comparison never run the model again. Merged parameters are computed per batch with ``torch.lerp``
unless all λ's states fit in ``state_cache_bytes``, so memory does not grow with the grid either.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm import tqdm

from lewc.core.errors import LewcError
from lewc.core.io import data_home, write_json_atomic
from lewc.sweep.batchnorm import BN_BATCH, DEFAULT_BN_IMAGES, bn_templates, reestimate, reestimation_images
from lewc.sweep.blocks import PROBE_IMAGES, BlockPair, block_pair
from lewc.sweep.capture import LayerStatistics
from lewc.sweep.merge import Pair, State, check_lams
from lewc.training.checkpoints import architecture
from lewc.training.data import DeviceDataset

STATE_CACHE_BYTES = 2 * 1024**3
# The test images are read in blocks of CONDITION_BATCH; the condition statistics use the first rows of
# each block (``LayerStatistics.condition_batch``). Like BN_BATCH it defines a statistic, so neither
# follows ``batch_size``, which is only how many images one forward pass computes (docs/conventions.md).
CONDITION_BATCH = 500


@dataclass
class SweepOptions:
    """Knobs of the sweep; the defaults are what ``lewc.verify`` uses.

    ``batch_size`` is the compute batch (``--batch-size-eval``): it changes memory and speed, not a
    number (up to float rounding of the kernels); ``bn_batch`` and ``condition_batch`` define statistics.
    """

    n_test: int | None = None
    bn_images: int = DEFAULT_BN_IMAGES
    reestimate_bn: bool = True
    batch_size: int = 500
    bn_batch: int = BN_BATCH
    condition_batch: int = CONDITION_BATCH
    capture: bool = True
    vectorize: str = "auto"  # "auto" (measure), "yes", "no": vmap over λ for logits-only passes
    progress: bool = True
    state_cache_bytes: int = STATE_CACHE_BYTES
    capture_kwargs: dict = field(default_factory=dict)


@dataclass
class SweepResult:
    lams: list[float]
    logits: dict[str, torch.Tensor]  # split -> (λ, image, class), float32 on CPU
    labels: dict[str, torch.Tensor]
    layer_stats: LayerStatistics | None
    timings: dict[str, float]
    vectorized: bool


class MergedStates:
    """θ(λ) for each λ of the grid, with BN buffers re-estimated where the model has BN."""

    def __init__(self, pair: Pair, lams: Sequence[float], cache_bytes: int):
        self.pair = pair
        self.lams = list(lams)
        self.buffers: list[State] = [{} for _ in self.lams]
        self._stacked: State | None = None
        size = sum(t.numel() * t.element_size() for t in pair.state_a.values())
        self.cache: list[State] | None = (
            [pair.state_at(lam) for lam in self.lams] if size * len(self.lams) <= cache_bytes else None
        )

    def stacked(self) -> State:
        """All λ's states stacked on a leading dimension (for ``torch.func.vmap``), built once."""
        if self._stacked is None:
            self._stacked = {k: torch.stack([self[i][k] for i in range(len(self.lams))]) for k in self[0]}
        return self._stacked

    def __getitem__(self, i: int) -> State:
        state = self.cache[i] if self.cache is not None else self.pair.state_at(self.lams[i])
        return {**state, **self.buffers[i]} if self.buffers[i] else state

    def reestimate_bn(self, ds: DeviceDataset, images: torch.Tensor, batch_size: int, progress: bool) -> None:
        """Every λ's BN statistics on ``images`` (``reestimation_images``); the composed positive control
        re-estimates its two sources once instead (``lewc.sweep.blocks``)."""
        if isinstance(self.pair, BlockPair):
            self.pair.reestimate_sources(images, ds, batch_size)
            return
        template = bn_templates(self.pair)
        names = [n for n in self.pair.state_a if n.endswith(("running_mean", "running_var", "num_batches_tracked"))]
        first = None
        for i in tqdm(range(len(self.lams)), desc="BN re-estimation", disable=None if progress else True, leave=False):
            if self.pair.identical and first is not None:
                new = first  # A merged with itself: the same state, the same statistics
            else:
                new = first = reestimate(self.pair, self[i], images, ds, batch_size, template)
            self.buffers[i] = {n: new[n] for n in names}
            if self.cache is not None:
                self.cache[i] = {**self.cache[i], **self.buffers[i]}
        self._stacked = None


def _time(fn: Callable[[], object], device: torch.device, repeat: int = 2) -> float:
    best = float("inf")
    for _ in range(repeat):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return best


def vectorize_cache_key(pair: Pair, n_lams: int, batch: int, device: torch.device) -> str:
    """What decides whether vmap over λ beats a loop: the architecture, the device, threads, versions."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    arch = architecture(pair.meta_a) if pair.meta_a is not None else {"module": type(pair.model_a).__name__}
    parts = [json.dumps(arch, sort_keys=True), name, str(torch.get_num_threads()), torch.__version__]
    return "|".join([*parts, f"lams={n_lams}", f"batch={batch}"])


def choose_vectorize(pair: Pair, states: MergedStates, x: torch.Tensor, device: torch.device) -> bool:
    """vmap over λ or a loop: measured once per architecture, device, threads and versions, then cached.

    The probe costs about a second at ×16 and several at ×64 or on ResNets, so its answer is stored in
    ``<LEWC_DATA>/cache/vectorize.json`` and reused; deleting the file re-measures. The choice changes
    nothing but speed (both give the same logits up to float rounding).
    """
    if states.cache is None:
        return False
    key = vectorize_cache_key(pair, len(states.lams), len(x), device)
    path = data_home() / "cache" / "vectorize.json"
    try:
        cache = json.loads(path.read_text()) if path.is_file() else {}
    except (json.JSONDecodeError, UnicodeDecodeError):
        cache = {}  # a damaged cache only costs a new measurement
    if isinstance(cache.get(key), bool):
        return cache[key]
    decision = measure_vectorize(pair, states, x, device)
    try:
        write_json_atomic(path, cache | {key: decision})
    except OSError:
        pass  # a read-only data folder only means measuring again next time
    return decision


def measure_vectorize(pair: Pair, states: MergedStates, x: torch.Tensor, device: torch.device) -> bool:
    """Time vmap over λ against a loop on one batch; vmap only if faster."""
    stacked = states.stacked()
    with torch.no_grad():
        looped = _time(lambda: [pair.forward(states[i], x) for i in range(len(states.lams))], device)
        try:
            vmapped = _time(lambda: pair.forward_vmapped(stacked, x), device)
        except RuntimeError:  # an op without a batching rule
            return False
    return vmapped < looped


@torch.no_grad()
def logits_pass(
    pair: Pair,
    states: MergedStates,
    ds: DeviceDataset,
    split: str,
    batch_size: int,
    vectorized: bool,
    n: int | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """(λ, image, class) logits of one split, without layer capture."""
    out = []
    stacked = states.stacked() if vectorized else None
    for x, _ in tqdm(
        ds.batches(split, batch_size, n),
        desc=f"{split} pass",
        disable=None if progress else True,
        leave=False,
        total=-(-len(ds.split(split).head(n)) // batch_size),
    ):
        if pair.identical:  # every λ is A itself
            out.append(pair.forward(states[0], x).float().cpu().unsqueeze(0).repeat(len(states.lams), 1, 1))
        elif stacked is not None:
            out.append(pair.forward_vmapped(stacked, x).float().cpu())
        else:
            out.append(torch.stack([pair.forward(states[i], x).float() for i in range(len(states.lams))]).cpu())
    return torch.cat(out, dim=1)


TF32_SETTINGS = {"cuda_matmul_allow_tf32": False, "cudnn_allow_tf32": False}  # recorded by the sweep


@contextlib.contextmanager
def fp32_exact():
    """TF32 off for matmuls and cuDNN convolutions while the analysis runs (cuDNN's default runs fp32
    convolutions in TF32, ≈ 1e-3 relative; the controls' probes use 1e-4), restored afterwards."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = TF32_SETTINGS["cuda_matmul_allow_tf32"]
    torch.backends.cudnn.allow_tf32 = TF32_SETTINGS["cudnn_allow_tf32"]
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def sweep(pair: Pair, ds: DeviceDataset, lams: Sequence[float], options: SweepOptions | None = None) -> SweepResult:
    """Run the whole path sweep (see module docstring) and return logits and layer statistics (TF32 off)."""
    with fp32_exact(), torch.no_grad():
        return _sweep(pair, ds, lams, options)


def _sweep(pair: Pair, ds: DeviceDataset, lams: Sequence[float], options: SweepOptions | None = None) -> SweepResult:
    opt = options or SweepOptions()
    lams = check_lams(lams)
    timings: dict[str, float] = {}
    pair.template.to(ds.device)
    t0 = time.perf_counter()
    reestimating = pair.has_batchnorm and opt.reestimate_bn
    bn_images = reestimation_images(ds, opt.bn_images) if reestimating else None
    # the exact positive control: composed from its sources' passes where that checks out at every λ
    pair = block_pair(pair, next(ds.batches("calib", PROBE_IMAGES))[0], lams, bn_images, ds)
    states = MergedStates(pair, lams, opt.state_cache_bytes)
    if reestimating:
        states.reestimate_bn(ds, bn_images, opt.bn_batch, opt.progress)
    timings["bn"] = time.perf_counter() - t0
    first_x = next(ds.batches("calib", opt.batch_size))[0]
    vectorized = {"yes": states.cache is not None, "no": False}.get(opt.vectorize)
    if pair.identical or not getattr(pair, "vectorizable", True):
        vectorized = False
    if vectorized is None:
        vectorized = choose_vectorize(pair, states, first_x, ds.device)
    t0 = time.perf_counter()
    logits = {"calib": logits_pass(pair, states, ds, "calib", opt.batch_size, vectorized, progress=opt.progress)}
    timings["calib"] = time.perf_counter() - t0
    test = ds.test.head(opt.n_test)
    t0 = time.perf_counter()
    if opt.capture:
        stats = LayerStatistics(pair, lams, len(test), condition_batch=opt.condition_batch, **opt.capture_kwargs)
        i0, i1 = lams.index(0.0), lams.index(1.0)
        chunks = []
        n_batches = len(compute_chunks(len(test), opt.condition_batch, opt.batch_size))
        for start, (x, _) in tqdm(
            capture_chunks(ds, opt.n_test, opt.condition_batch, opt.batch_size),
            total=n_batches,
            desc="test pass (with layer capture)",
            disable=None if opt.progress else True,
            leave=False,
        ):
            # Only the endpoints' records live for the whole batch; each interior λ's records are
            # reduced by ``observe`` and dropped before the next λ runs, so peak memory does not
            # grow with the number of λ.
            ends = {}
            for i in (i0, i1):  # each endpoint's forward is freed but for what the batch needs
                if pair.identical and i == i1:
                    ends[i1] = ends[i0]
                    continue
                z, records = pair.forward(states[i], x, capture=True)
                ends[i] = (z, stats.keep_endpoint(records))
                del z, records
            stats.observe_endpoints(start, ends[i0][1], ends[i1][1])
            rows: list = [None] * len(lams)
            for i in range(len(lams)):
                # A merged with itself (the negative control) is A at every λ, bit for bit: one pass
                same = ends[i0] if pair.identical else None
                z, records = ends[i] if i in ends else same or pair.forward(states[i], x, capture=True)
                stats.observe(i, records)
                rows[i] = z.float()
                del z, records
            del ends
            stats.end_batch()
            chunks.append(torch.stack(rows).cpu())
        stats.finish()
        logits["test"] = torch.cat(chunks, dim=1)
    else:
        stats = None
        logits["test"] = logits_pass(pair, states, ds, "test", opt.batch_size, vectorized, opt.n_test, opt.progress)
    timings["test"] = time.perf_counter() - t0
    labels = {"calib": ds.calib.y.cpu(), "test": test.y.cpu()}
    for split, z in logits.items():
        if not torch.isfinite(z).all():
            bad = sorted({lams[i] for i in torch.nonzero(~torch.isfinite(z).all(-1).all(-1)).flatten().tolist()})
            raise LewcError(f"the merged model produced NaN/inf logits on {split} at λ = {bad}")
    return SweepResult(lams, logits, labels, stats, timings, vectorized)


def compute_chunks(n: int, block: int, batch: int) -> list[tuple[int, int]]:
    """(start, stop) of the compute batches over ``n`` images: blocks of ``block`` images, each cut into
    chunks of at most ``batch``; no chunk straddles two blocks."""
    return [(c, min(c + batch, b + block, n)) for b in range(0, n, block) for c in range(b, min(b + block, n), batch)]


def capture_chunks(ds: DeviceDataset, n: int | None, block: int, batch: int):
    """(start, (x, y)) of the test split's compute batches (``compute_chunks``), normalised."""
    test = ds.test.head(n)
    for start, stop in compute_chunks(len(test), block, batch):
        yield start, (ds.normalize(test.x[start:stop]), test.y[start:stop])


def accuracy_and_loss(logits: torch.Tensor, labels: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Per-λ accuracy and mean cross-entropy from (λ, image, class) logits."""
    correct = (logits.argmax(-1) == labels).double().mean(-1).numpy()
    ce = (
        torch.nn.functional.cross_entropy(
            logits.transpose(1, 2).double(), labels.expand(len(logits), -1), reduction="none"
        )
        .mean(-1)
        .numpy()
    )
    return correct, ce
