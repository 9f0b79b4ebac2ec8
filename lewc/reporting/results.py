"""Results as xarray Datasets with named dimensions, provenance in attrs, stored in netCDF4.

One Dataset per pair holds the path metrics (``acc``, ``loss``, ``loss_cal`` over ``split`` × ``lam``
and ``beta`` over ``lam``), the logits, the layer statistics (per-image Gram terms, sampled
activations over ``lam`` × ``layer`` × ``sample`` × ``unit``), the conditions, the fits, the
ensemble comparison and the barriers. Files are written atomically (temporary file, then rename)
with zstd compression (about 4× faster to write than zlib here) and re-opened lazily.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from lewc.core.errors import LewcError
from lewc.core.interrupts import deferred_interrupts
from lewc.core.io import atomic_path
from lewc.stats.claims import CLAIMS, get_claim
from lewc.training.checkpoints import CheckpointMeta

RESULTS_SCHEMA = "lewc.results/3"
STUDY_SCHEMA = "lewc.study/1"
DIMENSION_ORDER = ("width", "pair", "align", "lam", "kind", "split", "layer")  # leading dims, in this order

# CF-style documentation of every variable: (long_name, units, description). One unit per variable:
# accuracies in percent (%), their differences in percentage points (pp), losses in nats.
VARIABLES: dict[str, tuple[str, str, str]] = {
    "acc": ("top-1 accuracy", "%", "accuracy of the merged model θ(λ) per split, in percent"),
    "loss": ("cross-entropy at β = 1", "nats", "mean test/calib cross-entropy of the raw logits"),
    "loss_cal": ("calibrated cross-entropy", "nats", "mean cross-entropy of softmax(β·z), β fitted on calib"),
    "beta": ("inverse temperature", "1", "β minimising calib cross-entropy of softmax(β·z) at each λ"),
    "correct": ("correct top-1", "1", "per test image: 1 when the merged model's top-1 equals the label"),
    "loss_cal_per_image": ("calibrated cross-entropy per image", "nats", "per test image, at the fitted β"),
    "acc_ci": ("test accuracy 95% interval", "%", "per λ, bootstrap over test images (the claims' resamples)"),
    "loss_cal_ci": ("calibrated test loss 95% interval", "nats", "per λ, bootstrap over test images"),
    "logits_test": ("logits on the test split", "1", "merged model's logits per λ and image"),
    "labels_test": ("test labels", "1", "class index"),
    "logits_calib": ("logits on the calib split", "1", "merged model's logits per λ and calib image"),
    "labels_calib": ("calib labels", "1", "class index"),
    "barrier_acc": ("accuracy barrier", "pp", "[(1-λ)Acc_A + λAcc_B] − Acc(θ(λ)) at λ = ½ (at=mid) and its max"),
    "barrier_acc_ci": ("accuracy barrier 95% interval", "pp", "paired bootstrap over test images"),
    "barrier_loss_raw": ("raw loss barrier", "nats", "L(θ(λ)) − [(1-λ)L_A + λL_B] at β = 1, at λ = ½ and max"),
    "barrier_loss_raw_ci": ("raw loss barrier 95% interval", "nats", "paired bootstrap over test images"),
    "barrier_loss_cal": ("calibrated loss barrier", "nats", "same with every model's fitted β, at λ = ½ and max"),
    "barrier_loss_cal_ci": ("calibrated loss barrier 95% interval", "nats", "paired bootstrap over test images"),
    "barrier_acc_curve": ("accuracy barrier curve", "pp", "[(1-λ)Acc_A + λAcc_B] − Acc(θ(λ)) at every λ"),
    "barrier_loss_raw_curve": ("raw loss barrier curve", "nats", "L(θ(λ)) − [(1-λ)L_A + λL_B] at β = 1"),
    "barrier_loss_cal_curve": ("calibrated loss barrier curve", "nats", "same with every model's fitted β"),
    "gram": ("per-image Gram terms", "activation²", "⟨m,m⟩,⟨a,a⟩,⟨b,b⟩,⟨m,a⟩,⟨m,b⟩,⟨a,b⟩ of layer outputs"),
    "gram_total": ("Gram terms summed over images", "activation²", "sum over all test images of `gram`"),
    "act": ("sampled layer outputs", "activation", "merged layer output at a seeded subsample of images × units"),
    "unit_index": ("sampled unit", "1", "flattened index of each sampled unit (−1: layer has fewer units)"),
    "sample_image": ("sampled image", "1", "test-image index of each sample row"),
    "units_per_layer": ("units per image", "1", "number of output coordinates of the layer per image"),
    "is_relu": ("ReLU layer", "1", "1 if the layer's activation is ReLU (the conditions apply)"),
    "wa_terms": (
        "weak-additivity sums",
        "activation²",
        "per image ⟨u,v⟩,⟨u,u⟩,⟨v,v⟩ and the same with B's units shuffled",
    ),
    "ro_terms": (
        "reciprocal-orthogonality sums",
        "activation²",
        "per image ‖W_B z_A‖², ‖W_A z_A‖², ‖W_A z_B‖², ‖W_B z_B‖² and shuffled-input nulls",
    ),
    "weak_additivity": (
        "weak-additivity cosine",
        "1",
        "cos(σ(c_a z_A + c_b z_B), c_a σ(z_A) + c_b σ(z_B)), c = LEWC weights",
    ),
    "weak_additivity_null": ("weak-additivity cosine, pairing null", "1", "same with B's units shuffled"),
    "ro_b_on_a": ("‖W_B z_A‖/‖W_A z_A‖", "1", "reciprocal orthogonality, B's weights on A's layer input"),
    "ro_a_on_b": ("‖W_A z_B‖/‖W_B z_B‖", "1", "reciprocal orthogonality, mirror"),
    "ro_b_on_a_null": ("‖W_B P z_A‖/‖W_A z_A‖", "1", "null: A's input features shuffled"),
    "ro_a_on_b_null": ("‖W_A P z_B‖/‖W_B z_B‖", "1", "null: B's input features shuffled"),
    "wa_null_cos": ("weak-additivity cosine over shuffles", "1", "at λ = ½ with B's units shuffled, 20 shuffles"),
    "ro_null": ("cross-term ratio over shuffles", "1", "‖W_B P z_A‖/‖W_A z_A‖ and mirror, 20 input shuffles"),
    "coef_a": ("coefficient a", "1", "OLS m ≈ a·f_A + b·f_B on the sampled coordinates (statsmodels)"),
    "coef_b": ("coefficient b", "1", "see coef_a"),
    "coef_ci": ("coefficient 95% interval", "1", "image-clustered standard errors of coef_a, coef_b"),
    "r2": ("uncentred R²", "1", "of the subsample regression"),
    "coef_a_full": ("coefficient a, all images", "1", "same regression from the exact Gram sums over all test images"),
    "coef_b_full": ("coefficient b, all images", "1", "see coef_a_full"),
    "r2_full": ("uncentred R², all images", "1", "from the Gram sums"),
    "cos_lewc": ("cosine to the LEWC prediction", "1", "mean over images of cos(m, (1-λ)^ℓ a + λ^ℓ b)"),
    "cos_llfc": ("cosine to the LLFC prediction", "1", "mean over images of cos(m, (1-λ) a + λ b)"),
    "rel_err_lewc": ("relative error of LEWC", "1", "‖m − p‖/‖m‖ over all images"),
    "rel_err_llfc": ("relative error of LLFC", "1", "‖m − p‖/‖m‖ over all images"),
    "pred_a_lewc": ("LEWC's a", "1", "(1-λ)^ℓ"),
    "pred_b_lewc": ("LEWC's b", "1", "λ^ℓ"),
    "k_coord": (
        "exponent k_coord",
        "1",
        "WLS slope of log(a/b) on log((1-λ)/λ), a, b from the coordinate fits coef_a, coef_b; LEWC ℓ, LLFC 1",
    ),
    "k_coord_ci": ("k_coord 95% interval", "1", "from the WLS fit (delta-method weights)"),
    "k_coord_se": ("k_coord standard error", "1", "from the WLS fit"),
    "k_gram": (
        "exponent k_gram",
        "1",
        "OLS slope of log(a/b) on log((1-λ)/λ), a, b from the Gram sums over all images (coef_a_full, "
        "coef_b_full): the k of the lewc_weighting claim",
    ),
    "k_gram_ci": ("k_gram 95% interval", "1", "bootstrap over test images (the claims' resamples)"),
    "lewc_position": (
        "signed position between LLFC (0) and LEWC (1)",
        "1",
        "t_ℓ = (k_gram − 1)/(ℓ − 1): 0 when the layer splits as (1-λ) : λ (LLFC), 1 as (1-λ)^ℓ : λ^ℓ (LEWC); "
        "below 0 or above 1 beyond either; ℓ is ℓ_eff (depth_eff) in a normalised network; undefined where "
        "it is 1 (both predictions agree) or where LEWC predicts no exponent",
    ),
    "ens_agreement": (
        "top-1 agreement with the ensemble",
        "1",
        "kind: lewc (1-λ)^L z_A + λ^L z_B, plain (1-λ) z_A + λ z_B",
    ),
    "ens_agree_per_image": ("agreement per image", "1", "1 when merged and ensemble top-1 are equal"),
    "ens_kl": ("KL(merged ‖ ensemble)", "nats", "between calibrated softmaxes"),
    "ens_cosine": ("cosine of logits", "1", "merged vs ensemble logits, mean over images"),
    "ens_acc": ("ensemble accuracy", "%", "test accuracy of the ensemble itself, in percent"),
    "ens_loss_cal": ("ensemble calibrated loss", "nats", "with the ensemble's own β"),
    "ens_beta": ("ensemble β", "1", "inverse temperature fitted for the ensemble"),
    "claim_value": ("claim statistic", "see claim_units", "point value of each claim's statistic on this pair"),
    "claim_ci": ("claim statistic 95% interval", "see claim_units", "percentile bootstrap over test images"),
    "claim_replicates": (
        "claim statistic bootstrap replicates",
        "see claim_units",
        "the image-bootstrap replicates behind claim_ci (over test images, conditional on this pair)",
    ),
    "claim_verdict": ("verdict", "", "PASS / FAIL / INCONCLUSIVE / NOT APPLICABLE of the claim on this pair alone"),
    "claim_threshold": ("claim threshold", "see claim_units", "PASS needs the interval on the claim's side of it"),
    "claim_units": ("units of the claim statistic", "", "per claim"),
    "claim_note": ("note", "", "what the statistic saw (per-layer values, exclusions)"),
    "permutation_gap": (
        "permutation gap",
        "nats",
        "calibrated loss barrier at ½ without alignment minus after weight matching",
    ),
    "permutation_gap_ci": ("permutation gap 95% interval", "nats", "paired bootstrap over test images"),
    "permutation_gap_verdict": ("permutation-gap verdict", "", "PASS / FAIL / INCONCLUSIVE (threshold 0.1 nats)"),
}

# The same for every coordinate (dimension coordinates and auxiliary ones).
COORDINATES: dict[str, tuple[str, str, str]] = {
    "lam": ("interpolation weight λ", "1", "θ(λ) = (1-λ)θ_A + λθ_B; 0 is A, 1 is B"),
    "split": ("data split", "", "calib: held-out training images for β; test: the test set"),
    "at": ("where on the path", "", "mid: λ = ½; max: the largest value over the λ grid"),
    "bound": ("interval bound", "", "lo/hi of a central 95% interval"),
    "layer": ("layer", "", "name of a layer output the capture records"),
    "depth": ("layer depth ℓ", "1", "number of weight layers up to and including this one"),
    "depth_eff": (
        "effective depth",
        "1",
        "the exponent LEWC predicts after the network's normalisation (docs/conventions.md); NaN where none",
    ),
    "depth_eff_reason": ("effective depth undefined because", "", "empty where LEWC predicts an exponent"),
    "term": ("Gram term", "", "m = merged, a = A's, b = B's layer output"),
    "condition_image": ("condition image", "1", "test-image index used by the condition sums"),
    "wa_term": ("weak-additivity term", "", "see wa_terms"),
    "ro_term": ("reciprocal-orthogonality term", "", "see ro_terms"),
    "coef": ("regression coefficient", "", "a multiplies A's output, b B's"),
    "kind": ("ensemble kind", "", "lewc: (1-λ)^L z_A + λ^L z_B; plain: (1-λ) z_A + λ z_B"),
    "align": ("alignment of B", "", "none: B as trained; weights/activations: B permuted towards A"),
    "claim": ("claim", "", "claim id (docs/claims.md)"),
    "replicate": ("bootstrap replicate", "1", "index of an image resample (seeded, shared by all claims)"),
    "image": ("test image", "1", "index into the test split"),
    "calib_image": ("calib image", "1", "index into the calib split"),
    "class": ("class", "1", "class index"),
    "sample": ("sampled row", "1", "row of the coordinate subsample (see sample_image)"),
    "unit": ("sampled unit slot", "1", "column of the coordinate subsample (see unit_index)"),
    "width": ("width multiplier", "1", "of the model family"),
    "pair": ("seed pair", "1", "index of an independently trained pair"),
    "shuffle": ("null shuffle", "1", "index of a seeded permutation of units (the nulls' spread; context only)"),
    "direction": ("cross-term direction", "", "b_on_a: W_B on A's input; a_on_b: W_A on B's input"),
}

# Variables that are per coordinate or per image and that no summary needs once the claims'
# replicates are stored: written to samples.nc only on request (``--keep-samples``).
SAMPLE_VARIABLES = (
    "correct",
    "loss_cal_per_image",
    "gram",
    "act",
    "unit_index",
    "sample_image",
    "wa_terms",
    "ro_terms",
    "logits_test",
    "labels_test",
    "logits_calib",
    "labels_calib",
    "ens_agree_per_image",
)
BARRIER_NAMES = ("acc_mid", "acc_max", "loss_mid_raw", "loss_max_raw", "loss_mid_cal", "loss_max_cal")
BARRIER_UNITS = {"acc": "pp", "loss_raw": "nats", "loss_cal": "nats"}


# The paper's own per-layer statistics, kept beside lewc's verdicts everywhere a verdict appears
# (report.json/md, results.nc, study.nc, the trend): results.nc variable → (label, dims it has there).
PAPER_LAMS = (0.3, 0.5, 0.7)  # the λ at which the cosines are reported (LEWC and LLFC differ away from ½)
PAPER_STATISTICS: dict[str, str] = {
    "cos_lewc": "cosine of the merged output with the LEWC prediction (1-λ)^ℓ f_A + λ^ℓ f_B",
    "cos_llfc": "cosine of the merged output with the LLFC prediction (1-λ) f_A + λ f_B",
    "weak_additivity": "raw weak-additivity cosine (references: exact 1, independent Gaussians 0.93 at ½)",
    "r2_full": "uncentred R² of the layer's fit m ≈ a f_A + b f_B over all images",
    "ro_b_on_a": "raw cross-term ratio ‖W_B z_A‖/‖W_A z_A‖",
    "ro_a_on_b": "raw cross-term ratio ‖W_A z_B‖/‖W_B z_B‖",
    "lewc_position": "signed position between LLFC (0) and LEWC (1), t_ℓ = (k_gram − 1)/(ℓ − 1)",
}
# what the raw additivity cosine is read against: exact weak additivity, and two independent Gaussian
# pre-activations at λ = ½ (the paper's reference; a cosine near it is what chance alone gives)
WEAK_ADDITIVITY_REFERENCES = {"exact": 1.0, "independent_gaussians_mid": 0.93}


def lewc_position(k: np.ndarray, depth: np.ndarray) -> np.ndarray:
    """t_ℓ = (k_ℓ − 1)/(ℓ − 1): 0 at LLFC (k = 1), 1 at LEWC (k = ℓ); NaN where ℓ < 2."""
    k, depth = np.asarray(k, dtype=np.float64), np.asarray(depth, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(depth >= 2, (k - 1) / (depth - 1), np.nan)


def paper_statistics(res: xr.Dataset, lams=PAPER_LAMS) -> xr.Dataset:
    """One pair's (one alignment's) paper statistics over ``lam`` ∈ ``lams`` and ``layer``.

    Only the variables of ``PAPER_STATISTICS`` the results hold (a run without layer captures has
    none: an empty Dataset). A λ the grid lacks (within 1e-6) is NaN, never a neighbour's value.
    """
    if "layer" not in res.dims:
        return xr.Dataset()
    grid = np.asarray(res["lam"].values, dtype=np.float64)
    out = {}
    for name in PAPER_STATISTICS:
        if name == "lewc_position" and name not in res and "k_gram" in res:
            da = xr.DataArray(lewc_position(res["k_gram"].values, res["depth"].values), dims=("layer",))
        elif name in res:
            da = res[name].reset_coords(drop=True)
        else:
            continue
        if "lam" in da.dims:
            picked = []
            for lam in lams:
                j = int(np.argmin(np.abs(grid - lam)))
                row = da.isel(lam=j, drop=True)
                picked.append(row if abs(grid[j] - lam) < 1e-6 else row * np.nan)
            da = xr.concat(picked, dim="lam").assign_coords(lam=list(lams))
        out[name] = da.transpose(*[d for d in ("lam", "layer") if d in da.dims]).astype(np.float64)
    ds = xr.Dataset(out).assign_coords(layer=res["layer"].values, depth=("layer", res["depth"].values))
    return ds.assign_coords(lam=list(lams)) if "lam" not in ds.coords else ds


def barrier_parts(name: str) -> tuple[str, str]:
    """``"loss_mid_cal"`` → (``"barrier_loss_cal"``, ``"mid"``): the variable and its ``at``."""
    parts = name.split("_")
    if name not in BARRIER_NAMES:
        raise LewcError(f"unknown barrier {name!r}; one of {', '.join(BARRIER_NAMES)}")
    metric = "acc" if parts[0] == "acc" else f"loss_{parts[2]}"
    return f"barrier_{metric}", parts[1]


def barrier(ds: xr.Dataset, name: str) -> xr.DataArray:
    """A barrier by its report name (``acc_mid``, ``loss_max_cal``, …) from results or sweep Datasets."""
    var, at = barrier_parts(name)
    return ds[var].sel(at=at, drop=True)


def barrier_ci(ds: xr.Dataset, name: str) -> xr.DataArray:
    var, at = barrier_parts(name)
    return ds[f"{var}_ci"].sel(at=at, drop=True)


def barrier_units(name: str) -> str:
    return "pp" if name.startswith("acc") else "nats"


def split_samples(ds: xr.Dataset) -> tuple[xr.Dataset, xr.Dataset]:
    """(summary, samples): the small results file's content and the per-coordinate/per-image rest."""
    names = [v for v in SAMPLE_VARIABLES if v in ds.data_vars]
    samples = ds[names]
    summary = ds.drop_vars(names)
    used = {d for v in summary.data_vars.values() for d in v.dims}
    summary = summary.drop_vars([c for c in summary.coords if not set(summary[c].dims) <= used])
    samples.attrs = {k: ds.attrs[k] for k in ("schema", "lewc_version", "sha256_a", "sha256_b") if k in ds.attrs}
    samples.attrs["content"] = "per-coordinate and per-image samples of results.nc (lewc.verify --keep-samples)"
    return summary, samples


def document(ds: xr.Dataset) -> xr.Dataset:
    """Attach CF-style long_name/units/description to every known variable and coordinate."""
    for table, items in ((VARIABLES, ds.data_vars.items()), (COORDINATES, ds.coords.items())):
        for name, var in items:
            if name in table:
                long_name, units, description = table[name]
                var.attrs.setdefault("long_name", long_name)
                var.attrs.setdefault("units", units)
                var.attrs.setdefault("description", description)
    return ds


def _encoding(ds: xr.Dataset, compression: str) -> dict[str, dict]:
    enc = {}
    for name, var in ds.data_vars.items():
        if var.ndim == 0 or var.dtype.kind not in "fiub":
            continue
        enc[name] = {"compression": "zstd", "complevel": 3} if compression == "zstd" else {"zlib": True, "complevel": 4}
    return enc


def write_netcdf(ds: xr.Dataset, path: str | os.PathLike, compression: str = "zstd") -> Path:
    """Write ``ds`` to netCDF4 atomically; an interrupted write leaves no file at ``path``.

    Ctrl-C during the C-level write is delivered when it returns (``lewc.core.interrupts``), so it
    always ends the command instead of deadlocking on xarray's netCDF lock.
    """
    path = Path(path)
    clean = document(ds.copy())
    for name, var in clean.data_vars.items():  # netCDF has no bool
        if var.dtype == bool:
            clean[name] = var.astype(np.int8)
            clean[name].attrs["boolean"] = 1
    with atomic_path(path) as tmp:
        try:
            try:
                with deferred_interrupts():  # Ctrl-C inside xarray's netCDF lock would deadlock its close
                    clean.to_netcdf(tmp, engine="netcdf4", encoding=_encoding(clean, compression))
            except (ValueError, RuntimeError) as err:
                if compression != "zstd" or ("zstd" not in str(err).lower() and "filter" not in str(err).lower()):
                    raise
                with deferred_interrupts():
                    clean.to_netcdf(tmp, engine="netcdf4", encoding=_encoding(clean, "zlib"))
        except RuntimeError as err:
            if "HDF" not in str(err) and "NetCDF" not in str(err):
                raise
            # the netCDF library reports a failed write (full disk, file-size limit) as an HDF error
            raise LewcError(f"cannot write {path.name} ({err}); the disk may be full; nothing was published") from None
    return path


def open_results(path: str | os.PathLike, schema: str | None = None) -> xr.Dataset:
    """Open a results file lazily (values are read on access), restoring booleans.

    With ``schema``, a netCDF file that is not a lewc file of that schema (a foreign file, an older
    lewc) is refused in one line instead of failing later on a missing variable.
    """
    path = Path(path)
    if not path.is_file():
        raise LewcError(f"results file {path} does not exist")
    try:
        ds = xr.open_dataset(path, engine="netcdf4")
    except Exception as err:  # noqa: BLE001 - empty, random or truncated bytes raise OSError, ValueError, …
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:300]
        raise LewcError(f"results file {path} cannot be read ({type(err).__name__}: {first})") from None
    if schema is not None and ds.attrs.get("schema") != schema:
        found = ds.attrs.get("schema", "no schema attribute")
        raise LewcError(f"{path} is not a lewc file of schema {schema} ({found}); regenerate it with lewc.verify")
    for name, var in ds.data_vars.items():
        if var.attrs.get("boolean") == 1:
            ds[name] = var.astype(bool)
    return ds


def alignments(ds: xr.Dataset) -> list[str]:
    """The alignments a results file holds (``["none"]`` for a file without an ``align`` dimension)."""
    return [str(v) for v in ds["align"].values] if "align" in ds.dims else ["none"]


def for_alignment(ds: xr.Dataset, method: str = "none") -> xr.Dataset:
    """One alignment's slice, shaped like a single-alignment results file (no ``align`` dimension)."""
    if "align" not in ds.dims:
        if method != "none":
            raise LewcError(f"these results hold no {method!r} alignment; rerun lewc.verify with --align")
        return ds
    out = ds.sel(align=method, drop=True)
    if method != "none" and f"sidecar_b_{method}" in ds.attrs:  # B of this slice is the aligned B
        out.attrs = dict(out.attrs)  # sel shares the attrs dict: never rename B in the stacked results
        out.attrs["sidecar_b"] = ds.attrs[f"sidecar_b_{method}"]
        out.attrs["sha256_b"] = ds.attrs.get(f"sha256_b_{method}", "")
    return out


def stack_alignments(by_method: dict[str, xr.Dataset]) -> xr.Dataset:
    """Results of one pair under several alignments along an ``align`` dimension (attrs of ``none``)."""
    methods = list(by_method)
    out = xr.concat(
        [by_method[m] for m in methods], dim="align", coords="minimal", compat="override", combine_attrs="override"
    )
    out = out.assign_coords(align=methods)
    out.attrs = dict(by_method["none"].attrs)
    for m in methods[1:]:
        out.attrs[f"sidecar_b_{m}"] = by_method[m].attrs.get("sidecar_b", "")
        out.attrs[f"sha256_b_{m}"] = by_method[m].attrs.get("sha256_b", "")
    return out


def json_attr(obj: Any) -> str:
    """Store structured provenance (sidecars, options) as a JSON string attribute."""
    return json.dumps(obj, sort_keys=True, default=str)


def attr_json(ds: xr.Dataset, key: str) -> Any:
    return json.loads(ds.attrs[key]) if key in ds.attrs else None


def attr_meta(ds: xr.Dataset, key: str, required: tuple[str, ...] = ()) -> CheckpointMeta | None:
    """An endpoint's stored sidecar (``sidecar_a``, ``sidecar_b``) as a record; ``None`` when the file has
    none, unless fields are ``required`` (``CheckpointMeta.from_stored``): then a ``KeyError``."""
    if key not in ds.attrs:
        if required:
            raise KeyError(key)
        return None
    return CheckpointMeta.from_stored(json.loads(ds.attrs[key]), required)


FRAME_COLUMNS = ("kind", "name", "align", "value", "ci_lo", "ci_hi", "units", "threshold", "direction", "verdict")


def to_frame(ds: xr.Dataset):
    """One pair's results as a tidy pandas DataFrame: one row per claim × alignment, one per barrier × alignment.

    Columns ``FRAME_COLUMNS``; ``kind`` is ``claim`` or ``barrier``, intervals are 95% bootstrap
    intervals over test images, ``units`` is one unit per row (pp, nats, or the claim's statistic).
    A claim that compares two alignments (``ClaimType.compares``: ``permutation_gap``) has ``align`` =
    ``none-<method>`` (``none-weights``). This is what ``summary.csv`` beside report.json holds.
    """
    import pandas as pd

    rows = []
    for method in alignments(ds):
        res = for_alignment(ds, method)
        if "claim_value" in res:
            for cid in res["claim"].values:
                c = res.sel(claim=cid)
                spec = get_claim(str(cid)).spec
                lo, hi = (float(v) for v in c["claim_ci"].values)
                rows.append(
                    ("claim", str(cid), method, float(c["claim_value"]), lo, hi, spec.units, spec.threshold)
                    + (spec.direction, str(c["claim_verdict"].values))
                )
        for name in BARRIER_NAMES:
            if barrier_parts(name)[0] in res:
                lo, hi = (float(v) for v in barrier_ci(res, name).values)
                value = float(barrier(res, name))
                rows.append(("barrier", name, method, value, lo, hi, barrier_units(name), np.nan, "", ""))
    for claim in CLAIMS.values():
        if claim.compares and claim.id in ds:
            spec, (lo, hi) = claim.spec, (float(v) for v in ds[f"{claim.id}_ci"].values)
            rows.append(
                ("claim", spec.id, f"none-{claim.compares}", float(ds[spec.id]), lo, hi, spec.units)
                + (spec.threshold, spec.direction, str(ds[f"{spec.id}_verdict"].values))
            )
    return pd.DataFrame(rows, columns=list(FRAME_COLUMNS))
