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

from dataclasses import dataclass

import torch

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
