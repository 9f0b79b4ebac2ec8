"""Streaming layer statistics of (merged, A, B) outputs, collected during the path sweep.

For every declared layer ℓ and every λ the merged output m, and the endpoint outputs a (λ = 0) and
b (λ = 1) of the same images, are reduced on the fly to:

* per-image Gram entries ⟨m,m⟩, ⟨a,a⟩, ⟨b,b⟩, ⟨m,a⟩, ⟨m,b⟩, ⟨a,b⟩ (6 numbers per image): the exact
  sufficient statistics of a no-intercept regression of m on (a, b) and of the cosine / relative
  error of any prediction c_a·a + c_b·b, for the whole set or any bootstrap resample of images;
* per-image weak additivity sums: ⟨u,v⟩, ⟨u,u⟩, ⟨v,v⟩ with u = σ(c_a z_A + c_b z_B),
  v = c_a σ(z_A) + c_b σ(z_B), c_a = (1-λ)^ℓ, c_b = λ^ℓ, z the endpoints' pre-activations; and the
  same three sums under the *pairing null*, where B's units (channels) are shuffled by a fixed
  seeded permutation: each model keeps its activation distribution, only the A–B correspondence of
  units is broken;
* per-image reciprocal orthogonality sums ‖W_B z_A‖², ‖W_A z_A‖², ‖W_A z_B‖², ‖W_B z_B‖² with z the
  layer's input, and the null ‖W_B P z_A‖², ‖W_A P z_B‖² with the input's features shuffled.

The conditions are kept per image (so their intervals are bootstrap intervals over images) on
the first ``condition_images`` images (default 2,048), which bounds their cost.
* raw values of a fixed, seeded subsample of coordinates (images × units per layer) for the
  statsmodels fits and the figures.

Nothing stored grows with the size of a layer, and only the 6-per-image Gram entries grow with the
number of images (like the logits that are kept anyway).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.func import functional_call

from lewc.conventions import lewc_weights
from lewc.merge import Pair

GRAM_TERMS = ("mm", "aa", "bb", "ma", "mb", "ab")
WA_TERMS = ("uv", "uu", "vv", "uv_null", "uu_null", "vv_null")
RO_TERMS = ("b_on_a", "a_on_a", "a_on_b", "b_on_b", "b_on_a_null", "a_on_b_null")
DEFAULT_SAMPLE_IMAGES = 512
DEFAULT_SAMPLE_UNITS = 256
DEFAULT_CONDITION_IMAGES = 2048
SAMPLE_SEED = 0


class LayerStatistics:
    """Accumulates the statistics above; call ``observe_endpoints`` then ``observe`` for each λ."""

    def __init__(
        self,
        pair: Pair,
        lams: Sequence[float],
        n_images: int,
        sample_images: int = DEFAULT_SAMPLE_IMAGES,
        sample_units: int = DEFAULT_SAMPLE_UNITS,
        condition_images: int = DEFAULT_CONDITION_IMAGES,
        seed: int = SAMPLE_SEED,
    ):
        self.pair = pair
        self.lams = list(lams)
        self.depths = [spec.depth for spec in pair.layers]
        self.is_relu = [spec.is_relu for spec in pair.layers]
        self.activations = [spec.activate for spec in pair.layers]
        n_lam, n_layer = len(self.lams), len(pair.layers)
        self.rng = np.random.default_rng(seed)
        self.sample_image_index = np.sort(self.rng.choice(n_images, size=min(sample_images, n_images), replace=False))
        self.sample_units = sample_units
        self.unit_index = np.full((n_layer, sample_units), -1, dtype=np.int64)
        self.units_per_layer = np.zeros(n_layer, dtype=np.int64)
        self.gram = np.zeros((n_lam, n_layer, n_images, len(GRAM_TERMS)), dtype=np.float64)
        self.act = np.full((n_lam, n_layer, len(self.sample_image_index), sample_units), np.nan, dtype=np.float32)
        self.condition_images = min(condition_images, n_images)
        self.wa = np.zeros((n_lam, n_layer, self.condition_images, len(WA_TERMS)), dtype=np.float64)
        self.ro = np.zeros((n_layer, self.condition_images, len(RO_TERMS)), dtype=np.float64)
        self._unit_perm: list[torch.Tensor] = []
        self._input_perm: list[torch.Tensor] = []
        self.condition_seen = 0
        self._endpoints: tuple[list, list] | None = None
        self._unit_index_t: list[torch.Tensor] = []

    # -- per batch ----------------------------------------------------------------------------
    def observe_endpoints(self, start: int, records_a: list, records_b: list) -> None:
        """Register the endpoints' (input, pre) of a batch; they serve every λ of that batch.

        The endpoint outputs and their own Gram terms (⟨a,a⟩, ⟨b,b⟩, ⟨a,b⟩) are computed here once
        per batch instead of once per λ.
        """
        if not self._unit_index_t:
            self._choose_units(records_a)
        self._endpoints = (records_a, records_b)
        self._start = start
        n = records_a[0][1].shape[0]
        lo, hi = np.searchsorted(self.sample_image_index, [start, start + n])
        self._batch_pos = np.arange(lo, hi)
        self._batch_rows = torch.as_tensor(self.sample_image_index[lo:hi] - start, device=records_a[0][1].device)
        self._cond_rows = max(0, min(n, self.condition_images - self.condition_seen))
        self._cond_start = self.condition_seen
        with torch.no_grad():
            self._outs = []
            for a_rec, b_rec in zip(records_a, records_b, strict=True):
                a = a_rec[2].flatten(1).float()
                b = b_rec[2].flatten(1).float()
                self._outs.append((a, b, (a * a).sum(1), (b * b).sum(1), (a * b).sum(1)))
            if self._cond_rows:
                self._observe_reciprocal(records_a, records_b)
                self.condition_seen += self._cond_rows

    def observe(self, lam_index: int, records_m: list) -> None:
        """Accumulate the statistics of the merged model at ``lams[lam_index]`` for the current batch."""
        assert self._endpoints is not None, "observe_endpoints first"
        records_a, records_b = self._endpoints
        lam = self.lams[lam_index]
        start = self._start
        with torch.no_grad():
            terms = []
            for li in range(len(self.depths)):
                a, b, aa, bb, ab = self._outs[li]
                m = records_m[li][2].flatten(1).float()
                terms.append(torch.stack([(m * m).sum(1), aa, bb, (m * a).sum(1), (m * b).sum(1), ab], dim=1))
                self._store_sample(lam_index, li, m)
                if self.is_relu[li] and self._cond_rows:
                    self._observe_additivity(lam_index, li, lam, records_a[li][1], records_b[li][1])
            block = torch.stack(terms).double().cpu().numpy()  # one device→host copy per λ and batch
            self.gram[lam_index, :, start : start + block.shape[1]] = block

    # -- helpers ------------------------------------------------------------------------------
    def _choose_units(self, records: list) -> None:
        for li, (_, pre, _) in enumerate(records):
            numel = int(pre[0].numel())
            k = min(self.sample_units, numel)
            idx = np.sort(self.rng.choice(numel, size=k, replace=False))
            self.unit_index[li, :k] = idx
            self.units_per_layer[li] = numel
            self._unit_index_t.append(torch.as_tensor(idx, device=pre.device))
            # The pairing nulls: a fixed shuffle of the units (channels) of the pre-activation, and
            # of the features (channels) of the layer's input.
            self._unit_perm.append(torch.as_tensor(self.rng.permutation(pre.shape[1]), device=pre.device))
            self._input_perm.append(torch.as_tensor(self.rng.permutation(records[li][0].shape[1]), device=pre.device))

    def _store_sample(self, lam_index: int, li: int, m: torch.Tensor) -> None:
        if len(self._batch_pos) == 0:
            return
        vals = m[self._batch_rows][:, self._unit_index_t[li]].cpu().numpy()
        self.act[lam_index, li, self._batch_pos, : vals.shape[1]] = vals

    def _observe_additivity(self, lam_index: int, li: int, lam: float, za: torch.Tensor, zb: torch.Tensor) -> None:
        rows = slice(self._cond_start, self._cond_start + self._cond_rows)
        ca, cb = lewc_weights(lam, self.depths[li])
        sums = additivity_sums(
            za[: self._cond_rows], zb[: self._cond_rows], ca, cb, self.activations[li], self._unit_perm[li]
        )
        self.wa[lam_index, li, rows] = sums.double().cpu().numpy()

    def _observe_reciprocal(self, records_a: list, records_b: list) -> None:
        """Per image ‖W_B z_A‖², ‖W_A z_A‖², ‖W_A z_B‖², ‖W_B z_B‖² and the shuffled-input nulls (no bias)."""
        rows = slice(self._cond_start, self._cond_start + self._cond_rows)
        modules = dict(self.pair.template.named_modules())
        for li, (name, spec) in enumerate(zip(self.pair.weight_module_names, self.pair.layers, strict=True)):
            module = modules[name]
            key = f"{name}.{spec.weight_param}" if name else spec.weight_param
            wa, wb = self.pair.state_a[key], self.pair.state_b[key]
            zeros = {
                p: torch.zeros_like(t) for p, t in module.named_parameters(recurse=False) if p != spec.weight_param
            }
            za, zb = records_a[li][0][: self._cond_rows], records_b[li][0][: self._cond_rows]
            perm = self._input_perm[li]
            outs = [
                functional_call(module, {spec.weight_param: w, **zeros}, (z,))
                for w, z in ((wb, za), (wa, za), (wa, zb), (wb, zb), (wb, za[:, perm]), (wa, zb[:, perm]))
            ]
            self.ro[li, rows] = torch.stack([o.flatten(1).double().square().sum(1) for o in outs], 1).cpu().numpy()


def additivity_sums(
    za: torch.Tensor, zb: torch.Tensor, ca: float, cb: float, act, unit_perm: torch.Tensor
) -> torch.Tensor:
    """Per-image (⟨u,v⟩, ⟨u,u⟩, ⟨v,v⟩) for the real pairing and for B's units shuffled by ``unit_perm``.

    u = σ(c_a z_A + c_b z_B), v = c_a σ(z_A) + c_b σ(z_B); ``za``/``zb`` are (image, unit, …) pre-activations.
    """
    za, zb = za.float(), zb.float()
    sums = []
    for zb_used in (zb, zb[:, unit_perm]):
        u = act(ca * za + cb * zb_used).flatten(1)
        v = (ca * act(za) + cb * act(zb_used)).flatten(1)
        sums += [(u * v).sum(1), (u * u).sum(1), (v * v).sum(1)]
    return torch.stack(sums, 1)
