"""The positive control's path from the endpoints' own passes: no forward of the 2× wide network.

The positive control embeds bias-free A and B in disjoint blocks of a network twice as wide
(``lewc.align.controls.disjoint_block_pair``). For a normalisation-free ReLU network every merged
layer ℓ of that pair is *exactly* ``(1-λ)^ℓ f_ℓ(A) ⊕ λ^ℓ f_ℓ(B)`` — A's block scaled, B's block
scaled, side by side — and the head, whose output is not doubled, sums them:
``(1-λ)^L z_A + λ^L z_B``. So one pass of bias-free A and one of bias-free B per batch give every λ's
logits and layer records; the 2× network (four times the FLOPs of an endpoint for an MLP, per λ) is
never run. Before it is used, the composition is checked against a real forward of the wide merged
network at λ = ½ on a probe batch (every record and the logits, to ``PROBE_RTOL``); a layout where it
does not hold falls back to the wide network.

Numbers differ from the wide network's only by float rounding (the scale is applied once instead of
layer by layer); ``tests/test_controls_cost.py`` checks that the control's verdicts are the same.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import torch

from lewc.core.conventions import lewc_weights
from lewc.models.common import LayerRecord
from lewc.sweep.merge import Pair, interpolate

LAM_KEY = "__lewc_lam__"
PROBE_RTOL = 1e-4
log = logging.getLogger(__name__)


class BlockPair(Pair):
    """A positive-control pair (wide A', B') whose forward is composed from bias-free A and B's passes.

    ``state_at(λ)`` is a marker ``{LAM_KEY: λ}``; ``forward`` reads λ from it. ``state_a``/``state_b``
    remain the wide endpoints' tensors (reciprocal orthogonality reads their weights).
    """

    vectorizable = False

    def __init__(self, pair: Pair, small_a: torch.nn.Module, small_b: torch.nn.Module):
        super().__init__(pair.model_a, pair.model_b, pair.meta_a, pair.meta_b)
        self.small = (small_a.eval(), small_b.eval())
        self._cached: tuple | None = None

    def state_at(self, lam: float) -> dict:
        return {LAM_KEY: float(lam)}

    def _passes(self, x: torch.Tensor, capture: bool):
        c = self._cached
        if c is not None and c[0] is x and (c[1] or not capture):
            return c[2]
        with torch.no_grad():
            out = tuple(m(x, capture=capture) for m in self.small)
        self._cached = (x, capture, out)  # holding x keeps its id from being reused
        return out

    def forward(self, state: Mapping[str, torch.Tensor], x: torch.Tensor, capture: bool = False):
        if LAM_KEY not in state:  # a real state (e.g. the probe's): the wide network
            return super().forward(state, x, capture)
        lam = state[LAM_KEY]
        a, b = self._passes(x, capture)
        depth = self.layers[-1].depth
        if not capture:
            return compose(a, b, lam, depth, False)
        (za, rec_a), (zb, rec_b) = a, b
        records = []
        for spec, ra, rb, shape in zip(self.layers, rec_a, rec_b, self._wide_shapes, strict=True):
            d = spec.depth
            records.append(
                LayerRecord(
                    compose(ra.inp, rb.inp, lam, d - 1, shape[0][1] == 2 * ra.inp.shape[1]),
                    compose(ra.pre, rb.pre, lam, d, shape[1][1] == 2 * ra.pre.shape[1]),
                    compose(ra.out, rb.out, lam, d, shape[2][1] == 2 * ra.out.shape[1]),
                )
            )
        return compose(za, zb, lam, depth, False), records

    def matches_wide(self, probe: torch.Tensor) -> bool:
        """Whether the composition reproduces the wide merged network at λ = ½ on ``probe``."""
        with torch.no_grad():
            z_wide, rec_wide = Pair.forward(self, interpolate(self.state_a, self.state_b, 0.5), probe, capture=True)
            self._wide_shapes = [tuple(t.shape for t in r) for r in rec_wide]
            z, rec = self.forward({LAM_KEY: 0.5}, probe, capture=True)
            self._cached = None
            pairs = [(z, z_wide)] + [
                (u, w) for r, rw in zip(rec, rec_wide, strict=True) for u, w in zip(r, rw, strict=True)
            ]
            for got, ref in pairs:
                if got.shape != ref.shape:
                    return False
                tol = PROBE_RTOL * float(ref.abs().max()) if ref.numel() else 0.0
                if not torch.allclose(got, ref, rtol=PROBE_RTOL, atol=tol):
                    return False
        return True


def compose(a: torch.Tensor, b: torch.Tensor, lam: float, power: int, doubled: bool) -> torch.Tensor:
    """The wide network's tensor at λ from A's and B's: side by side when the dimension doubles,
    summed when it does not (the head); power 0 is the shared input."""
    if power == 0:
        return a
    ca, cb = lewc_weights(lam, power)
    if doubled:
        return torch.cat([a * ca, b * cb], dim=1)
    return torch.add(a * ca, b, alpha=cb)


def block_pair(pair: Pair, probe: torch.Tensor) -> Pair:
    """``pair`` as a ``BlockPair`` when it is an exact positive control whose composition checks out."""
    src_a = getattr(pair.model_a, "lewc_block_source", None)
    src_b = getattr(pair.model_b, "lewc_block_source", None)
    if src_a is None or src_b is None or isinstance(pair, BlockPair):
        return pair
    composed = BlockPair(pair, src_a, src_b)
    if composed.matches_wide(probe):
        return composed
    log.info("positive control: the block composition does not match the wide network; running it")
    return pair
