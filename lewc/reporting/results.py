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

RESULTS_SCHEMA = "lewc.results/2"
SWEEP_SCHEMA = "lewc.sweep/2"
STUDY_SCHEMA = "lewc.study/1"
DIMENSION_ORDER = ("width", "pair", "align", "lam", "kind", "split", "layer")  # leading dims, in this order

# CF-style documentation of every variable: (long_name, units, description).
VARIABLES: dict[str, tuple[str, str, str]] = {
    "acc": ("top-1 accuracy", "1", "accuracy of the merged model θ(λ) per split"),
    "loss": ("cross-entropy at β = 1", "nats", "mean test/calib cross-entropy of the raw logits"),
    "loss_cal": ("calibrated cross-entropy", "nats", "mean cross-entropy of softmax(β·z), β fitted on calib"),
    "beta": ("inverse temperature", "1", "β minimising calib cross-entropy of softmax(β·z) at each λ"),
    "correct": ("correct top-1", "1", "per test image: merged model's top-1 equals the label"),
    "loss_cal_per_image": ("calibrated cross-entropy per image", "nats", "per test image, at the fitted β"),
    "logits_test": ("logits on the test split", "1", "merged model's logits per λ and image"),
    "labels_test": ("test labels", "1", "class index"),
    "logits_calib": ("logits on the calib split", "1", "merged model's logits per λ and calib image"),
    "labels_calib": ("calib labels", "1", "class index"),
    "barrier": ("barrier", "pp or nats", "barrier_name: acc_* in percentage points, loss_* in nats; mid = λ ½"),
    "barrier_ci": ("barrier 95% interval", "pp or nats", "paired bootstrap over test images"),
    "acc_barrier": ("accuracy barrier curve", "pp", "[(1-λ)Acc_A + λAcc_B] − Acc(θ(λ))"),
    "loss_barrier_raw": ("raw loss barrier curve", "nats", "L(θ(λ)) − [(1-λ)L_A + λL_B] at β = 1"),
    "loss_barrier_cal": ("calibrated loss barrier curve", "nats", "same with every model's fitted β"),
    "gram": ("per-image Gram terms", "activation²", "⟨m,m⟩,⟨a,a⟩,⟨b,b⟩,⟨m,a⟩,⟨m,b⟩,⟨a,b⟩ of layer outputs"),
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
    "coef_a": ("coefficient a", "1", "OLS m ≈ a·f_A + b·f_B on the sampled coordinates (statsmodels)"),
    "coef_b": ("coefficient b", "1", "see coef_a"),
    "coef_ci": ("coefficient 95% CI", "1", "image-clustered standard errors"),
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
    "exponent": ("effective exponent k_ℓ", "1", "WLS slope of log(a/b) on log((1-λ)/λ); LEWC ℓ, LLFC 1"),
    "exponent_k_lo": ("k_ℓ lower 95% bound", "1", "from the WLS fit"),
    "exponent_k_hi": ("k_ℓ upper 95% bound", "1", "from the WLS fit"),
    "exponent_k_se": ("k_ℓ standard error", "1", "from the WLS fit"),
    "ens_agreement": (
        "top-1 agreement with the ensemble",
        "1",
        "kind: lewc (1-λ)^L z_A + λ^L z_B, plain (1-λ) z_A + λ z_B",
    ),
    "ens_agree_per_image": ("agreement per image", "1", "merged and ensemble top-1 equal"),
    "ens_kl": ("KL(merged ‖ ensemble)", "nats", "between calibrated softmaxes"),
    "ens_cosine": ("cosine of logits", "1", "merged vs ensemble logits, mean over images"),
    "ens_acc": ("ensemble accuracy", "1", "test accuracy of the ensemble itself"),
    "ens_loss_cal": ("ensemble calibrated loss", "nats", "with the ensemble's own β"),
    "ens_beta": ("ensemble β", "1", "inverse temperature fitted for the ensemble"),
}


def document(ds: xr.Dataset) -> xr.Dataset:
    """Attach CF-style long_name/units/description to every known variable (unknown ones untouched)."""
    for name, var in ds.data_vars.items():
        if name in VARIABLES:
            long_name, units, description = VARIABLES[name]
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
    except OSError as err:
        raise LewcError(f"results file {path} cannot be read ({err})") from None
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
