"""Streaming layer statistics of (merged, A, B) outputs, collected during the path sweep.

For every declared layer ℓ and every λ the merged output m, and the endpoint outputs a (λ = 0) and
b (λ = 1) of the same images, are reduced on the fly to:

* per-image Gram entries ⟨m,m⟩, ⟨a,a⟩, ⟨b,b⟩, ⟨m,a⟩, ⟨m,b⟩, ⟨a,b⟩ (6 numbers per image): the exact
  sufficient statistics of a no-intercept regression of m on (a, b) and of the cosine / relative
  error of any prediction c_a·a + c_b·b, for the whole set or any bootstrap resample of images;
* weak additivity sums: ⟨u,v⟩, ⟨u,u⟩, ⟨v,v⟩ with u = σ(c_a z_A + c_b z_B), v = c_a σ(z_A) + c_b σ(z_B),
  c_a = (1-λ)^ℓ, c_b = λ^ℓ, z the endpoints' pre-activations;
* reciprocal orthogonality sums ‖W_B z_A‖², ‖W_A z_A‖², ‖W_A z_B‖², ‖W_B z_B‖² with z the layer's
  input.

The two conditions are dataset-level ratios of sums; they are accumulated on the first
``condition_images`` images (default 2,048, whole batches), which bounds their cost.
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

from lewc.merge import Pair

GRAM_TERMS = ("mm", "aa", "bb", "ma", "mb", "ab")
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
        self.is_relu = [spec.activation == "relu" for spec in pair.layers]
        n_lam, n_layer = len(self.lams), len(pair.layers)
        self.rng = np.random.default_rng(seed)
        self.sample_image_index = np.sort(self.rng.choice(n_images, size=min(sample_images, n_images), replace=False))
        self.sample_units = sample_units
        self.unit_index = np.full((n_layer, sample_units), -1, dtype=np.int64)
        self.units_per_layer = np.zeros(n_layer, dtype=np.int64)
        self.gram = np.zeros((n_lam, n_layer, n_images, len(GRAM_TERMS)), dtype=np.float64)
        self.act = np.full((n_lam, n_layer, len(self.sample_image_index), sample_units), np.nan, dtype=np.float32)
        self.wa = np.zeros((n_lam, n_layer, 3), dtype=np.float64)
        self.pre_sq = np.zeros((n_layer, 2), dtype=np.float64)  # Σ z_A², Σ z_B² (for the Gaussian baseline)
        self.pre_count = np.zeros(n_layer, dtype=np.float64)
        self.ro = np.zeros((n_layer, 4), dtype=np.float64)
        self.condition_images = condition_images
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
        self._conditions_now = self.condition_seen < self.condition_images
        with torch.no_grad():
            self._outs = []
            for li, ((_, za, out_a), (_, zb, out_b)) in enumerate(zip(records_a, records_b, strict=True)):
                a = out_a.flatten(1).float()
                b = out_b.flatten(1).float()
                self._outs.append((a, b, (a * a).sum(1), (b * b).sum(1), (a * b).sum(1)))
                self.pre_sq[li, 0] += float(za.double().square().sum())
                self.pre_sq[li, 1] += float(zb.double().square().sum())
                self.pre_count[li] += za.numel()
            if self._conditions_now:
                self._observe_reciprocal(records_a, records_b)
                self.condition_seen += n

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
                if self.is_relu[li] and self._conditions_now:
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

    def _store_sample(self, lam_index: int, li: int, m: torch.Tensor) -> None:
        if len(self._batch_pos) == 0:
            return
        vals = m[self._batch_rows][:, self._unit_index_t[li]].cpu().numpy()
        self.act[lam_index, li, self._batch_pos, : vals.shape[1]] = vals

    def _observe_additivity(self, lam_index: int, li: int, lam: float, za: torch.Tensor, zb: torch.Tensor) -> None:
        ell = self.depths[li]
        ca, cb = (1.0 - lam) ** ell, lam**ell
        u = torch.relu(ca * za + cb * zb).flatten().float()
        v = (ca * torch.relu(za) + cb * torch.relu(zb)).flatten().float()
        self.wa[lam_index, li] += [float(u @ v), float(u @ u), float(v @ v)]

    def _observe_reciprocal(self, records_a: list, records_b: list) -> None:
        """‖W_B z_A‖², ‖W_A z_A‖², ‖W_A z_B‖², ‖W_B z_B‖² with the layer's weight operation (no bias)."""
        tmpl = self.pair.template
        modules = dict(tmpl.named_modules())
        for li, name in enumerate(self.pair.weight_module_names):
            module = modules[name]
            wa, wb = self.pair.state_a[f"{name}.weight"], self.pair.state_b[f"{name}.weight"]
            extra = {"bias": torch.zeros_like(module.bias)} if getattr(module, "bias", None) is not None else {}
            za, zb = records_a[li][0], records_b[li][0]
            outs = [
                functional_call(module, {"weight": w, **extra}, (z,))
                for w, z in ((wb, za), (wa, za), (wa, zb), (wb, zb))
            ]
            self.ro[li] += [float(o.double().square().sum()) for o in outs]
