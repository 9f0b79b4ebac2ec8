"""From a pair to one results Dataset: sweep once, then calibrate, barriers, conditions, fits, ensembles.

Everything after ``path.sweep`` works on its stored outputs (logits and layer statistics); nothing
runs the model again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

import numpy as np
import torch
import xarray as xr

from lewc.core.conventions import LAM_CONVENTION, LEVEL, N_BOOT, percentile_interval
from lewc.core.version import __version__
from lewc.models.effective import effective_depths
from lewc.pipeline.admission import reported_meta, stored_sha256
from lewc.reporting.results import RESULTS_SCHEMA, json_attr, lewc_position
from lewc.stats import barriers, conditions, ensemble, fit
from lewc.stats.calibrate import cross_entropy_per_sample, fit_betas
from lewc.stats.claims import claims_dataset
from lewc.sweep.capture import GRAM_TERMS, NULL_IMAGES, RO_TERMS, WA_TERMS
from lewc.sweep.merge import Pair
from lewc.sweep.path import SweepOptions, SweepResult, accuracy_and_loss, sweep
from lewc.training.data import DeviceDataset

log = logging.getLogger(__name__)

BARRIER_METRICS = ("acc", "loss_raw", "loss_cal")
AT = ("mid", "max")


def path_dataset(result: SweepResult, n_boot: int = N_BOOT) -> tuple[xr.Dataset, dict]:
    """Issue-4 path results: acc (%), loss, loss_cal over (split, lam), beta over lam; and the barriers.

    Each barrier metric is its own variable in one unit (``barrier_acc`` in pp, ``barrier_loss_*``
    in nats) over ``at`` (mid, max), its interval ``<name>_ci`` over (at, bound).
    """
    lams = result.lams
    betas = fit_betas(result.logits["calib"], result.labels["calib"])
    splits = ("calib", "test")
    acc = np.zeros((2, len(lams)))
    loss = np.zeros((2, len(lams)))
    loss_cal = np.zeros((2, len(lams)))
    per_sample = {}
    for si, split in enumerate(splits):
        acc[si], loss[si] = accuracy_and_loss(result.logits[split], result.labels[split])
        per_sample[split] = cross_entropy_per_sample(result.logits[split], result.labels[split], betas)
        loss_cal[si] = per_sample[split].mean(1)
    test = result.logits["test"]
    y = result.labels["test"]
    correct = (test.argmax(-1) == y).numpy()
    raw = cross_entropy_per_sample(test, y, 1.0)
    barrier = barriers.summarize(lams, correct, raw, per_sample["test"], n_boot=n_boot)
    data = {
        "acc": (("split", "lam"), 100.0 * acc),
        "loss": (("split", "lam"), loss),
        "loss_cal": (("split", "lam"), loss_cal),
        "beta": (("lam",), betas),
        "correct": (("lam", "image"), correct),
        "loss_cal_per_image": (("lam", "image"), per_sample["test"]),
        "logits_test": (("lam", "image", "class"), test.numpy()),
        "labels_test": (("image",), y.numpy()),
        "logits_calib": (("lam", "calib_image", "class"), result.logits["calib"].numpy()),
        "labels_calib": (("calib_image",), result.labels["calib"].numpy()),
    }
    counts = barriers.image_counts(correct.shape[-1], n_boot)  # the claims' resamples
    for name, per_image in (("acc_ci", 100.0 * correct), ("loss_cal_ci", per_sample["test"])):
        reps = barriers.bootstrap_means(per_image, n_boot, counts=counts)  # (R, λ)
        data[name] = (("lam", "bound"), percentile_interval(reps, LEVEL).T)
    for metric in BARRIER_METRICS:
        prefix, _, suffix = metric.partition("_")
        names = [f"{prefix}_{at}" + (f"_{suffix}" if suffix else "") for at in AT]
        data[f"barrier_{metric}"] = (("at",), [barrier[n]["value"] for n in names])
        data[f"barrier_{metric}_ci"] = (("at", "bound"), [barrier[n]["ci"] for n in names])
        data[f"barrier_{metric}_curve"] = (("lam",), barrier[f"curve_{metric}"]["value"])
    ds = xr.Dataset(data, coords={"lam": lams, "split": list(splits), "at": list(AT), "bound": ["lo", "hi"]})
    return ds, barrier


def layer_dataset(
    result: SweepResult,
    depths: Sequence[int],
    names: Sequence[str],
    effective: tuple[Sequence[float], Sequence[str]] | None = None,
) -> xr.Dataset:
    """Layer statistics, conditions and fits; dimensions in the order (lam, layer, …).

    ``effective`` is (k, reason) per layer from ``lewc.models.effective``: the exponent LEWC predicts after
    the network's normalisation (coordinates ``depth_eff``, NaN where none, and ``depth_eff_reason``).
    """
    stats = result.layer_stats
    lams = result.lams
    # LEWC's exponent per layer: ℓ_eff after normalisation (NaN where it predicts none), ℓ without it
    exponents = np.asarray(effective[0] if effective is not None else depths, dtype=np.float64)
    fits = fit.fit_layers(lams, exponents, stats.act, stats.gram)
    wa = conditions.weak_additivity(stats.wa, image_axis=2)
    relu = np.asarray(stats.is_relu)
    for key in ("cos", "null"):
        wa[key][:, ~relu] = np.nan
    ro = conditions.reciprocal_orthogonality(stats.ro)
    null_wa, null_ro = conditions.null_spread(stats.wa_null, stats.ro_null, stats.ro[:, :NULL_IMAGES])
    null_wa[~relu] = np.nan
    lam_layer = ("lam", "layer")
    data = {
        "gram": (("lam", "layer", "image", "term"), stats.gram),
        "act": (("lam", "layer", "sample", "unit"), stats.act),
        "unit_index": (("layer", "unit"), stats.unit_index),
        "sample_image": (("sample",), stats.sample_image_index),
        "units_per_layer": (("layer",), stats.units_per_layer),
        "is_relu": (("layer",), relu.astype(np.int8)),
        "wa_terms": (("lam", "layer", "condition_image", "wa_term"), stats.wa),
        "ro_terms": (("layer", "condition_image", "ro_term"), stats.ro),
        "weak_additivity": (lam_layer, wa["cos"]),
        "weak_additivity_null": (lam_layer, wa["null"]),
        "ro_b_on_a": (("layer",), ro["b_on_a"]),
        "ro_a_on_b": (("layer",), ro["a_on_b"]),
        "ro_b_on_a_null": (("layer",), ro["null_b_on_a"]),
        "ro_a_on_b_null": (("layer",), ro["null_a_on_b"]),
        "wa_null_cos": (("layer", "shuffle"), null_wa),
        "ro_null": (("layer", "shuffle", "direction"), null_ro),
        "coef_ci": (("lam", "layer", "coef", "bound"), fits["coef_ci"].transpose(1, 0, 2, 3)),
        "gram_total": (("lam", "layer", "term"), stats.gram.sum(axis=2)),
        "k_coord": (("layer",), fits["k"]),
        "k_coord_ci": (("layer", "bound"), np.stack([fits["k_lo"], fits["k_hi"]], axis=1)),
        "k_coord_se": (("layer",), fits["k_se"]),
    }
    for key in fit.LAYER_LAM_KEYS:
        data[key] = (lam_layer, fits[key].T)
    full = np.stack([fits["coef_a_full"], fits["coef_b_full"]], axis=-1)  # (layer, λ, 2)
    data["k_gram"] = (("layer",), fit.weighting_exponent(lams, full, fit.weight_depths(exponents, depths)))
    data["lewc_position"] = (("layer",), lewc_position(data["k_gram"][1], exponents))
    return xr.Dataset(
        data,
        coords={
            "lam": lams,
            "layer": list(names),
            "depth": ("layer", list(depths)),
            **(
                {
                    "depth_eff": ("layer", np.asarray(effective[0], dtype=np.float64)),
                    "depth_eff_reason": ("layer", np.array(list(effective[1]), dtype=object).astype(str)),
                }
                if effective is not None
                else {}
            ),
            "term": list(GRAM_TERMS),
            "condition_image": ("condition_image", np.asarray(stats.condition_image_index, dtype=np.int64)),
            "wa_term": list(WA_TERMS),
            "ro_term": list(RO_TERMS),
            "coef": ["a", "b"],
            "bound": ["lo", "hi"],
            "shuffle": np.arange(null_wa.shape[1]),
            "direction": ["b_on_a", "a_on_b"],
        },
    )


def ensemble_dataset(result: SweepResult, betas: np.ndarray, depth: int) -> xr.Dataset:
    cmp = ensemble.compare(result.lams, result.logits, result.labels, betas, depth)
    data = {f"ens_{k}": (("lam", "kind"), v.T) for k, v in cmp.items() if k != "agree_per_image"}
    data["ens_acc"] = (("lam", "kind"), 100.0 * cmp["acc"].T)  # percent, like acc
    data["ens_agree_per_image"] = (("lam", "kind", "image"), cmp["agree_per_image"].transpose(1, 0, 2))
    return xr.Dataset(data, coords={"kind": list(ensemble.KINDS), "lam": result.lams})


def predicted_depths(pair: Pair, ds: DeviceDataset, options: SweepOptions) -> tuple[list[float], list[str]]:
    """LEWC's exponent per captured layer for this network and normalisation (docs/conventions.md)."""
    param = next(pair.template.parameters())
    gen = torch.Generator(device="cpu").manual_seed(0)
    example = torch.randn(2, *ds.info.in_shape, generator=gen).to(param.device, param.dtype)
    return effective_depths(pair.template, example, reestimate_bn=options.reestimate_bn)


def _label(provenance: dict | None) -> str:
    """Which sweep a log line belongs to: the alignment, or the control."""
    provenance = provenance or {}
    if "control" in provenance:
        return f"{provenance['control']} control"
    return f"align {provenance.get('alignment', 'none')}"


def log_passes(path_ds: xr.Dataset, label: str, seconds: float) -> None:
    """One line per λ-pass (test accuracy and loss at that λ), then the sweep's total."""
    test = path_ds.sel(split="test")
    for lam, acc, loss in zip(test.lam.values, test.acc.values, test.loss.values, strict=True):
        log.info("sweep %s: λ %.3g acc %.4f loss %.4f", label, lam, acc, loss)
    log.info("sweep %s: %d λ, %.1f s", label, path_ds.sizes["lam"], seconds)


def analyze(
    pair: Pair,
    ds: DeviceDataset,
    lams: Sequence[float],
    options: SweepOptions | None = None,
    provenance: dict | None = None,
    n_boot: int = N_BOOT,
) -> xr.Dataset:
    """Sweep the pair once and return the complete results Dataset of issue 4 and 5."""
    options = options or SweepOptions()
    t0 = time.perf_counter()
    result = sweep(pair, ds, lams, options)
    path_ds, _ = path_dataset(result, n_boot)
    log_passes(path_ds, _label(provenance), time.perf_counter() - t0)
    parts = [path_ds]
    effective = predicted_depths(pair, ds, options)
    if result.layer_stats is not None:
        parts.append(layer_dataset(result, [s.depth for s in pair.layers], [s.name for s in pair.layers], effective))
    depth_eff, depth_eff_reason = effective[0][-1], effective[1][-1]
    # the LEWC ensemble uses the exponent LEWC predicts at the logits (ℓ where it predicts none)
    ens_depth = depth_eff if np.isfinite(depth_eff) else pair.template.total_depth
    parts.append(ensemble_dataset(result, path_ds["beta"].values, ens_depth))
    out = xr.merge(parts, combine_attrs="override", join="exact")
    out.attrs.update(
        {
            "schema": RESULTS_SCHEMA,
            "lewc_version": __version__,
            "torch_version": torch.__version__,
            "dataset": ds.info.name,
            "n_test": int(result.logits["test"].shape[1]),
            "n_calib": int(result.logits["calib"].shape[1]),
            "n_train": len(ds.train),
            "bn_reestimated": int(pair.has_batchnorm and options.reestimate_bn),
            "bn_images": options.bn_images if pair.has_batchnorm and options.reestimate_bn else 0,
            "lam_convention": LAM_CONVENTION,
            "total_depth": pair.template.total_depth,
            "total_depth_eff": float(depth_eff),
            "total_depth_eff_reason": depth_eff_reason,
            "vectorized": int(result.vectorized),
            "timings": json_attr(result.timings),
            "sha256_a": stored_sha256(pair.meta_a),
            "sha256_b": stored_sha256(pair.meta_b),
            "sidecar_a": json_attr(reported_meta(pair.meta_a)),  # a sidecar's own claims nested as unverified
            "sidecar_b": json_attr(reported_meta(pair.meta_b)),
        }
    )
    if provenance:
        out.attrs.update({k: v if isinstance(v, str | int | float) else json_attr(v) for k, v in provenance.items()})
    claims = claims_dataset(out)  # from the per-image data, before samples.nc takes it away
    attrs = dict(out.attrs) | claims.attrs
    out = xr.merge([out, claims], combine_attrs="override", join="exact")
    out.attrs = attrs
    return out
