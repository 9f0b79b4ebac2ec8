"""The positive control's path from the endpoints' own passes: no forward of the 2× wide network.

The positive control embeds bias-free A and B in disjoint blocks of a network twice as wide
(``lewc.align.controls.disjoint_block_pair``). Every merged tensor of that pair is then A's tensor
times (1-λ)^p beside B's times λ^p — side by side where the dimension doubles, summed where it does not
(the head's logits) — with one exponent p per captured tensor:

* normalisation-free ReLU networks: p is the tensor's depth ℓ (each weight layer carries one factor);
* BatchNorm with statistics re-estimated per λ: the merged statistics of an A channel are its own scaled
  by (1-λ)^p, so the normalised value is A's own (A's statistics re-estimated on the same images) and the
  interpolated affine puts back one factor — p restarts at 1 (``lewc.models.effective``). This is exact
  when BN's ε is negligible against the variance: a block scaled by c normalises as σ² + ε/c², which is
  why the control's BN layers use ``lewc.align.controls.CONTROL_BN_EPS``.

So one pass of bias-free A and one of bias-free B per batch (and, with BN, one re-estimation of each)
give every λ's logits and layer records; the 2× network (four times an endpoint's FLOPs per λ, and its
BN re-estimation at every λ) is never run. Before it is used the composition is checked against the
wide merged network at **every λ of the grid** on a probe batch (BN statistics of both re-estimated on
the same probe images): every record and the logits, to ``PROBE_RTOL``; the exponents are read off the
probe at λ = ½ and must then hold at every other λ. Where anything does not match, the wide network
runs. Numbers differ from the wide network's by float rounding only; ``tests/test_controls_cost.py``
checks that the control's numbers and verdicts are the same either way, on an MLP and a BN ResNet.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Mapping, Sequence

import torch
from torch.func import functional_call

from lewc.core.conventions import lewc_weights
from lewc.models.common import LayerRecord
from lewc.sweep.batchnorm import bn_template, reestimate
from lewc.sweep.merge import Pair, interpolate, model_state

LAM_KEY = "__lewc_lam__"
PROBE_RTOL = 1e-4
PROBE_IMAGES = 16  # images of the probe batch: the identity is exact, so a few images check every unit
PROBE_BN_BATCH = 16  # the probe re-estimates BN on two batches of this size (the identity holds for any)
SHARED = -1  # exponent marker: the tensor is the shared input, the same in A, B and the wide network
log = logging.getLogger(__name__)


class BlockPair(Pair):
    """A positive-control pair (wide A', B') whose forward is composed from bias-free A and B's passes.

    ``state_at(λ)`` is a marker ``{LAM_KEY: λ}``; ``forward`` reads λ from it. ``state_a``/``state_b``
    remain the wide endpoints' tensors (reciprocal orthogonality reads their weights). With BN the sweep
    calls ``reestimate_sources`` once instead of re-estimating the wide network at every λ.
    """

    vectorizable = False

    def __init__(self, pair: Pair, small_a: torch.nn.Module, small_b: torch.nn.Module):
        super().__init__(pair.model_a, pair.model_b, pair.meta_a, pair.meta_b)
        self.small = (small_a.eval(), small_b.eval())
        self.small_states = [model_state(m) for m in self.small]
        self.layout: list[tuple[int, bool]] = []  # (exponent, doubled) of the logits, then each record's fields
        self._cached: tuple | None = None

    def state_at(self, lam: float) -> dict:
        return {LAM_KEY: float(lam)}

    def reestimate_sources(self, images: torch.Tensor, ds, batch_size: int) -> None:
        """A's and B's BN statistics re-estimated on ``images`` (what the wide network's would be, per block)."""
        self.small_states = [
            reestimate(None, model_state(m), images, ds, batch_size, bn_template(m)) for m in self.small
        ]
        self._cached = None

    def _passes(self, x: torch.Tensor, capture: bool):
        c = self._cached
        if c is not None and c[0] is x and (c[1] or not capture):
            return c[2]
        with torch.no_grad():
            out = tuple(
                functional_call(m, s, (x,), {"capture": capture})
                for m, s in zip(self.small, self.small_states, strict=True)
            )
        self._cached = (x, capture, out)  # holding x keeps its id from being reused
        return out

    def forward(self, state: Mapping[str, torch.Tensor], x: torch.Tensor, capture: bool = False):
        if LAM_KEY not in state:  # a real state (e.g. the probe's): the wide network
            return super().forward(state, x, capture)
        lam = state[LAM_KEY]
        a, b = self._passes(x, capture)
        if not capture:
            return compose(a, b, lam, *self.layout[0])
        (za, rec_a), (zb, rec_b) = a, b
        fields = iter(self.layout[1:])
        records = [
            LayerRecord(*(compose(u, v, lam, *next(fields)) for u, v in zip(ra, rb, strict=True)))
            for ra, rb in zip(rec_a, rec_b, strict=True)
        ]
        return compose(za, zb, lam, *self.layout[0]), records

    def _wide(self, lam: float, probe: torch.Tensor, bn_images: torch.Tensor | None, ds):
        state = interpolate(self.state_a, self.state_b, lam)
        if bn_images is not None:
            state = reestimate(self, state, bn_images, ds, PROBE_BN_BATCH, self._probe_template)
        z, records = Pair.forward(self, state, probe, capture=True)
        return [z, *(t for r in records for t in r)]

    def _small(self, probe: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        self._cached = None
        (za, rec_a), (zb, rec_b) = self._passes(probe, True)
        self._cached = None
        return [za, *(t for r in rec_a for t in r)], [zb, *(t for r in rec_b for t in r)]

    def matches_wide(
        self, probe: torch.Tensor, lams: Sequence[float], bn_images: torch.Tensor | None = None, ds=None
    ) -> bool:
        """Whether the composition reproduces the wide merged network at every λ in ``lams`` on ``probe``
        (BN statistics of both re-estimated on ``bn_images``); sets the exponents on success."""
        with torch.no_grad():
            if bn_images is not None:
                self._probe_template = bn_template(self.template)
                self.reestimate_sources(bn_images, ds, PROBE_BN_BATCH)
            small_a, small_b = self._small(probe)
            half = self._wide(0.5, probe, bn_images, ds)
            layout = read_layout(small_a, small_b, half)
            if layout is None:
                return False
            self.layout = layout
            checks = []
            for lam in sorted(set(lams) | {0.5}):
                wide = half if lam == 0.5 else self._wide(lam, probe, bn_images, ds)
                for (p, doubled), u, v, ref in zip(layout, small_a, small_b, wide, strict=True):
                    checks.append(close(compose(u, v, lam, p, doubled), ref))
            return bool(torch.stack(checks).all())  # one host sync for the whole probe


def read_layout(
    small_a: list[torch.Tensor], small_b: list[torch.Tensor], wide: list[torch.Tensor]
) -> list[tuple[int, bool]] | None:
    """Each tensor's (exponent, doubled) read off the wide network at λ = ½, where both blocks carry ½^p:
    p = log₂(‖A ⊕ B‖ / ‖wide‖) (side by side) or log₂(‖A + B‖ / ‖wide‖) (summed); a tensor equal to A's
    and B's is the shared input. None when a shape is neither A's nor doubled."""
    layout, norms = [], []
    for u, v, w in zip(small_a, small_b, wide, strict=True):
        norm = torch.linalg.vector_norm
        if w.shape == u.shape:
            layout.append(False)
            norms.append(torch.stack([norm(u + v), norm(w - u), norm(w)]).double())
        elif w.dim() >= 2 and w.shape[:1] + w.shape[2:] == u.shape[:1] + u.shape[2:] and w.shape[1] == 2 * u.shape[1]:
            layout.append(True)
            n_cat = norm(torch.stack([norm(u), norm(v)]))
            norms.append(torch.stack([n_cat, n_cat.new_tensor(math.inf), norm(w)]).double())
        else:
            return None
    values = torch.stack(norms).tolist()  # one host sync
    out = []
    for doubled, (ref, to_a, n_wide) in zip(layout, values, strict=True):
        if not doubled and to_a <= PROBE_RTOL * n_wide:
            out.append((SHARED, False))
        elif ref == 0.0 or n_wide == 0.0:
            out.append((0, doubled))  # all zeros: any exponent composes them
        else:
            out.append((max(0, round(math.log2(ref / n_wide))), doubled))
    return out


def close(got: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """A 0-d bool on the device: |got − ref| ≤ PROBE_RTOL · (|ref| + max |ref|) everywhere, and finite."""
    if got.shape != ref.shape:
        return torch.tensor(False, device=ref.device)
    if not ref.numel():
        return torch.tensor(True, device=ref.device)
    tol = PROBE_RTOL * (ref.abs() + ref.abs().amax())
    return (got - ref).abs().le(tol).all() & torch.isfinite(got).all()


def compose(a: torch.Tensor, b: torch.Tensor, lam: float, power: int, doubled: bool) -> torch.Tensor:
    """The wide network's tensor at λ from A's and B's: side by side when the dimension doubles, summed
    when it does not (the head); the shared input (``SHARED``) is A's."""
    if power == SHARED:
        return a
    ca, cb = lewc_weights(lam, power)
    if doubled:  # written in place into the two halves: no scaled copies to concatenate
        n = a.shape[1]
        out = a.new_empty((a.shape[0], 2 * n, *a.shape[2:]))
        torch.mul(a, ca, out=out[:, :n])
        torch.mul(b, cb, out=out[:, n:])
        return out
    return torch.add(a * ca, b, alpha=cb)


def block_pair(
    pair: Pair,
    probe: torch.Tensor,
    lams: Sequence[float] = (0.0, 0.5, 1.0),
    bn_images: torch.Tensor | None = None,
    ds=None,
) -> Pair:
    """``pair`` as a ``BlockPair`` when it is an exact positive control whose composition checks out at
    every λ of ``lams``. A BN network is composed only when its statistics are re-estimated (``bn_images``:
    the sweep's re-estimation images, whose first ``2 · PROBE_BN_BATCH`` the probe uses)."""
    src_a = getattr(pair.model_a, "lewc_block_source", None)
    src_b = getattr(pair.model_b, "lewc_block_source", None)
    if src_a is None or src_b is None or isinstance(pair, BlockPair):
        return pair
    if pair.has_batchnorm and bn_images is None:
        log.info("positive control: BN statistics are not re-estimated, so the wide network runs")
        return pair
    probe_images = bn_images[: 2 * PROBE_BN_BATCH] if pair.has_batchnorm else None
    composed = BlockPair(pair, copy.deepcopy(src_a), copy.deepcopy(src_b))
    if composed.matches_wide(probe, lams, probe_images, ds):
        return composed
    log.info("positive control: the block composition does not match the wide network; running it")
    return pair
