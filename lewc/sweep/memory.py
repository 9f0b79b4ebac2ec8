"""Peak device memory of the path sweep, computed on the meta device: no memory is allocated.

The sweep's largest live set is known from its order of work (``lewc.sweep.path``) and the shapes of one
captured forward pass, which a model built on ``torch.device("meta")`` gives for any width in
milliseconds. Counted, per phase of one test batch (the peak is the largest phase):

* resident: the endpoints' tensors (A, B), the private template, and the merged states — all λ
  when they fit in the state cache, else one θ(λ) at a time;
* endpoint forward: the first endpoint's kept records (outputs, and the condition rows of inputs
  and pre-activations: ``LayerStatistics.keep_endpoint``) while the second runs with full capture;
* merged forward: both endpoints' kept records, the weak-additivity inputs (shuffled z_B and the
  σ of z_A, z_B and shuffled z_B on the condition rows of every ReLU layer), and one λ's full capture;
* calibration pass: when all λ's states fit the cache, the logits-only passes may run vmapped over
  λ (``SweepOptions.vectorize``), holding ``n_lams`` forwards' transients at once;
* within any forward, a transient of ``TRANSIENT_MAPS`` maps of the largest layer output (a
  residual block's conv → norm → activation temporaries) — the one assumption not read off the
  shapes; and the per-batch statistics buffers.

The logits and host-side arrays are not device memory. ``benchmarks/bench_memory.py`` compares
this with a measured peak.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import torch

from lewc.core.errors import LewcError
from lewc.models import build
from lewc.sweep.capture import (
    CONDITION_COORDINATES,
    DEFAULT_CONDITION_IMAGES,
    DEFAULT_SAMPLE_IMAGES,
    DEFAULT_SAMPLE_UNITS,
    GRAM_TERMS,
    MIN_CONDITION_IMAGES,
    WA_TERMS,
)
from lewc.sweep.path import STATE_CACHE_BYTES

TRANSIENT_MAPS = 3
ADDITIVITY_TENSORS = 4  # z_B shuffled, σ(z_A), σ(z_B), σ(z_B shuffled); z_A, z_B are the kept rows


@dataclass
class PeakEstimate:
    """Bytes of each component and the peak; ``phase`` names the phase where the peak falls."""

    parameters: int
    resident: int
    endpoint_phase: int
    merged_phase: int
    calib_phase: int
    peak: int
    phase: str
    forward_records: int
    kept_per_endpoint: int
    additivity: int
    condition_rows: int

    def gib(self) -> dict[str, float]:
        return {k: v / 2**30 for k, v in self.__dict__.items() if isinstance(v, int) and k != "condition_rows"}


def _nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def captured_shapes(model: torch.nn.Module, in_shape: tuple, batch: int) -> list[tuple[torch.Tensor, ...]]:
    """(input, pre, out) meta tensors of one captured forward of ``batch`` images."""
    with torch.no_grad():
        _, records = model(torch.empty(batch, *in_shape, device="meta"), capture=True)
    return records


def estimate_sweep_peak(
    family: str,
    width: int,
    in_shape: tuple,
    num_classes: int = 10,
    batch: int = 500,
    n_lams: int = 11,
    state_cache_bytes: int = STATE_CACHE_BYTES,
    **build_kwargs,
) -> PeakEstimate:
    """Peak device bytes of ``lewc.sweep.path.sweep`` with capture for this architecture (see module doc)."""
    with torch.device("meta"):
        model = build(family, width, num_classes, in_shape, **build_kwargs)
    return _estimate(model, in_shape, batch, n_lams, state_cache_bytes)


def _estimate(model: torch.nn.Module, in_shape: tuple, batch: int, n_lams: int, state_cache_bytes: int) -> PeakEstimate:
    relu = [spec.is_relu for spec in model.layers()]
    params = sum(_nbytes(t) for t in model.parameters()) + sum(_nbytes(t) for t in model.buffers())
    cached = params * n_lams <= state_cache_bytes
    resident = 3 * params + (params * n_lams if cached else params)
    records = captured_shapes(model, in_shape, batch)
    unique: dict[int, int] = {}
    for rec in records:
        for t in rec:
            unique[id(t)] = _nbytes(t)
    forward_records = sum(unique.values())
    per_image = {
        "out": sum(_nbytes(rec.out) for rec in records) // batch,
        "inp": sum(_nbytes(inp) for inp, _, _ in records) // batch,
        "pre": sum(_nbytes(rec.pre) for rec in records) // batch,
        "pre_relu": sum(_nbytes(pre) for (_, pre, _), r in zip(records, relu, strict=True) if r) // batch,
    }
    widest = max(int(rec.pre[0].numel()) for rec in records)
    total_condition = min(DEFAULT_CONDITION_IMAGES, max(MIN_CONDITION_IMAGES, CONDITION_COORDINATES // widest))
    rows = min(batch, max(16, CONDITION_COORDINATES // widest), total_condition)
    kept = per_image["out"] * batch + (per_image["inp"] + per_image["pre"]) * rows
    additivity = ADDITIVITY_TENSORS * per_image["pre_relu"] * rows
    transient = TRANSIENT_MAPS * max(_nbytes(rec.out) for rec in records)
    layers = len(records)
    sample_rows = min(batch, DEFAULT_SAMPLE_IMAGES)
    buffers = 4 * n_lams * layers * (batch * len(GRAM_TERMS) + sample_rows * DEFAULT_SAMPLE_UNITS)
    buffers += 8 * n_lams * layers * rows * len(WA_TERMS)
    endpoint_phase = resident + kept + forward_records + transient
    merged_phase = resident + 2 * kept + additivity + forward_records + transient + buffers
    calib_phase = resident + (n_lams if cached else 1) * transient
    phases = {"endpoint forward": endpoint_phase, "merged forward": merged_phase, "vmapped calib pass": calib_phase}
    phase = max(phases, key=phases.__getitem__)
    peak = phases[phase]
    return PeakEstimate(
        parameters=params,
        resident=resident,
        endpoint_phase=endpoint_phase,
        merged_phase=merged_phase,
        calib_phase=calib_phase,
        peak=peak,
        phase=phase,
        forward_records=forward_records,
        kept_per_endpoint=kept,
        additivity=additivity,
        condition_rows=rows,
    )


# --- the whole run's plan, checked against the device before anything is trained or swept ----------------

MIN_COMPUTE_BATCH = 16  # below this a pass is launch-bound; a run that does not fit at 16 exits instead
USABLE_FRACTION = 0.9  # of the free memory: the caching allocator's fragmentation and cuDNN workspaces
DATASET_IMAGES = {"cifar10": 60_000, "cifar100": 60_000, "mnist": 70_000, "fashion_mnist": 70_000}


@dataclass
class RunPlan:
    """Peak device bytes of every phase of a verify run; ``peak`` is the largest. ``compute_batch`` is the
    main sweeps' compute batch; ``batches`` names the compute batch of each sweep (a control's may be
    smaller: ``plan_run``)."""

    compute_batch: int
    phases: dict[str, int]
    batches: dict[str, int] = field(default_factory=dict)

    @property
    def peak(self) -> int:
        return max(self.phases.values())

    @property
    def phase(self) -> str:
        return max(self.phases, key=self.phases.__getitem__)

    def batch_for(self, sweep: str) -> int:
        """The compute batch of ``sweep`` (a phase's name: ``sweep``, ``positive control``, …)."""
        return self.batches.get(sweep, self.compute_batch)

    def describe(self) -> str:
        parts = ", ".join(f"{k} {v / 2**30:.2f}" for k, v in self.phases.items())
        head = f"compute batch {self.compute_batch}: peak {self.peak / 2**30:.2f} GiB ({self.phase})"
        own = [f"{k} at compute batch {b}" for k, b in self.batches.items() if b != self.compute_batch]
        return f"{head}; GiB by phase: {parts}" + (f"; {', '.join(own)}" if own else "")


def _bn_phase(model: torch.nn.Module, in_shape: tuple, bn_batch: int) -> int:
    """Transients of one train-mode forward of a BN batch (no capture, no gradients): its largest maps."""
    if not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        return 0
    records = captured_shapes(model, in_shape, 1)
    return TRANSIENT_MAPS * bn_batch * max(_nbytes(rec.out) for rec in records)


def _align_buffers(model: torch.nn.Module, in_shape: tuple, method: str, batch: int) -> int:
    """Alignment's device buffers: per layer a units × units cost matrix (float64 for activation
    correlations), and for activation matching both models' captured forward of a batch."""
    records = captured_shapes(model, in_shape, batch)
    squares = sum(int(rec.out.shape[1]) ** 2 for rec in records)
    if method == "activations":
        forward = sum(_nbytes(t) for rec in records for t in {id(t): t for t in rec}.values())
        return 2 * forward + 3 * 8 * squares
    return 3 * 4 * squares


def plan_run(
    build_model,
    in_shape: tuple,
    batch: int,
    n_lams: int = 11,
    controls: bool = True,
    align: tuple[str, ...] = ("none", "weights"),
    dataset_bytes: int = 0,
    bn_batch: int = 500,
    state_cache_bytes: int = STATE_CACHE_BYTES,
    wide_factor: float | None = None,
    fit_controls: bool = True,
) -> RunPlan:
    """Every phase of ``lewc.pipeline.pair.analyse_pair`` at compute batch ``batch``: the admission passes,
    the sweep of each alignment (the original B stays alive beside an aligned one), alignment's buffers,
    and both controls (the positive control's network is twice as wide: ``build_model(2)``; where no
    such network can be built, ``wide_factor`` × the endpoints' sweep bounds it). The dataset is resident
    throughout. ``build_model(k)`` builds the endpoints' architecture at k× width on the meta device.

    The compute batch is chosen per sweep: the positive control's is the largest of ``batch``, ``batch``/2,
    … (down to ``MIN_COMPUTE_BATCH``) whose phase fits within the main run's peak (every phase but the
    controls'), so the 2× wide control adds no peak of its own where it can (``fit_controls=False``: at
    ``batch``, as before issue 31). The negative control, a 1× network, sweeps at ``batch``. A compute
    batch changes no number (docs/conventions.md)."""
    model = build_model(1)
    sweep = estimate_model_peak(model, in_shape, batch, n_lams, state_cache_bytes)
    params = sweep.parameters
    bn = _bn_phase(model, in_shape, bn_batch)
    phases = {
        "admission": dataset_bytes
        + 2 * params
        + TRANSIENT_MAPS * max(_nbytes(rec.out) for rec in captured_shapes(model, in_shape, batch)),
        "sweep": dataset_bytes + sweep.peak,
        "BN re-estimation": dataset_bytes + sweep.resident + bn,
    }
    batches = {"sweep": batch}
    for method in align:
        if method == "none":
            continue
        phases[f"align {method}"] = dataset_bytes + 3 * params + _align_buffers(model, in_shape, method, batch)
        phases[f"sweep {method}"] = dataset_bytes + params + sweep.peak
        batches[f"sweep {method}"] = batch
    if controls:
        main_peak = max(phases.values())
        positive_at = _positive_control_phase(
            build_model, model, sweep, in_shape, n_lams, dataset_bytes, bn, bn_batch, state_cache_bytes, wide_factor
        )
        control_batch = batch
        while fit_controls and control_batch > MIN_COMPUTE_BATCH and positive_at(control_batch) > main_peak:
            control_batch = max(MIN_COMPUTE_BATCH, control_batch // 2)
        phases["positive control"] = positive_at(control_batch)
        batches["positive control"] = control_batch
        phases["negative control"] = dataset_bytes + params + sweep.peak
        batches["negative control"] = batch
    return RunPlan(batch, phases, batches)


def _positive_control_phase(
    build_model, model, sweep: PeakEstimate, in_shape, n_lams, dataset_bytes, bn, bn_batch, state_cache_bytes, factor
):
    """``compute batch → the positive control's phase``: the 2× wide pair's sweep (or its BN re-estimation)
    beside the endpoints, their bias-free copies (the control's composition) and the dataset."""
    params = sweep.parameters
    alive = dataset_bytes + 2 * params + 2 * params  # A and B, and the bias-free copies the control composes
    try:
        wide = build_model(2)
    except Exception:  # a foreign architecture: bounded by a multiple of the endpoints' sweep
        wide = None
    if wide is not None:
        wide_bn = _bn_phase(wide, in_shape, bn_batch)
        wide_resident = estimate_model_peak(wide, in_shape, 1, n_lams, state_cache_bytes).resident

        def wide_sweep(batch: int) -> int:
            return estimate_model_peak(wide, in_shape, batch, n_lams, state_cache_bytes).peak

    else:
        factor = factor or 4.0
        wide_bn, wide_resident = int(2 * bn), int(factor * sweep.resident)

        def wide_sweep(batch: int) -> int:
            return int(factor * estimate_model_peak(model, in_shape, batch, n_lams, state_cache_bytes).peak)

    return functools.cache(lambda batch: alive + max(wide_sweep(batch), wide_resident + wide_bn))


def estimate_model_peak(
    model: torch.nn.Module, in_shape: tuple, batch: int, n_lams: int, state_cache_bytes: int = STATE_CACHE_BYTES
) -> PeakEstimate:
    """``estimate_sweep_peak`` of an already built (meta-device) model."""
    return _estimate(model, in_shape, batch, n_lams, state_cache_bytes)


def fit_compute_batch(plan_at, requested: int, free_bytes: int) -> RunPlan:
    """The largest compute batch (``requested``, halved down to ``MIN_COMPUTE_BATCH``) whose plan fits
    in ``USABLE_FRACTION`` of ``free_bytes``; the compute batch changes no number (docs/conventions.md).
    A run that does not fit even then is a one-line ``LewcError`` naming the fix."""
    budget = int(USABLE_FRACTION * free_bytes)
    batch = requested
    while True:
        plan = plan_at(batch)
        if plan.peak <= budget or batch <= MIN_COMPUTE_BATCH:
            break
        batch = max(MIN_COMPUTE_BATCH, batch // 2)
    if plan.peak > budget:
        raise LewcError(
            f"the run needs about {plan.peak / 2**30:.1f} GiB of device memory ({plan.phase}) even at compute batch "
            f"{batch}, but {budget / 2**30:.1f} GiB are usable ({free_bytes / 2**30:.1f} GiB free): run a smaller "
            "--width, or --no-controls, or fewer --lams (the state cache), or use a device with more memory"
        )
    return plan
