"""Figures drawn from stored results Datasets only (never from a model).

Each function takes results Datasets (one pair, or several with their ``width`` attribute), draws
one figure and returns ``(figure, caption)``. ``save`` writes PNG and PDF atomically.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import xarray as xr  # noqa: E402

from lewc.core.io import atomic_path  # noqa: E402
from lewc.reporting.results import alignments, for_alignment  # noqa: E402


def _width(res: xr.Dataset) -> int:
    return int(json.loads(res.attrs["sidecar_a"])["width"])


def _label(res: xr.Dataset) -> str:
    meta = json.loads(res.attrs["sidecar_a"])
    return f"×{meta['width']} (seeds {meta['seed']},{json.loads(res.attrs['sidecar_b'])['seed']})"


def save(fig: plt.Figure, stem: Path, formats: Sequence[str] = ("png",)) -> list[Path]:
    """Write ``stem.<format>`` for each format atomically (PNG for reports; paper_figs adds PDF); close."""
    paths = []
    for ext in formats:
        final = stem.with_suffix(f".{ext}")
        with atomic_path(final) as tmp:
            fig.savefig(tmp, format=ext, dpi=130, bbox_inches="tight")
        paths.append(final)
    plt.close(fig)
    return paths


def accuracy_loss_vs_lambda(results: Sequence[xr.Dataset]):
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for res in sorted(results, key=_width):
        lam = res.lam.values
        line = axes[0].plot(lam, 100 * res.acc.sel(split="test"), marker="o", ms=3, label=_label(res))[0]
        axes[1].plot(lam, res.loss.sel(split="test"), marker="o", ms=3, color=line.get_color())
        axes[2].plot(lam, res.loss_cal.sel(split="test"), marker="o", ms=3, color=line.get_color())
    for ax, title in zip(axes, ("test accuracy (%)", "test loss, raw (β = 1)", "test loss, calibrated β"), strict=True):
        ax.set_xlabel("λ  (θ = (1-λ)θ_A + λθ_B)")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    return fig, (
        "Accuracy and loss along the linear path without permutation; the calibrated loss uses "
        "one inverse temperature per λ fitted on the calib split."
    )


def beta_vs_lambda(results: Sequence[xr.Dataset]):
    fig, ax = plt.subplots(figsize=(5, 3.6))
    for res in sorted(results, key=_width):
        ax.plot(res.lam, res.beta, marker="o", ms=3, label=_label(res))
    ax.set_xlabel("λ")
    ax.set_ylabel("fitted inverse temperature β")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return fig, (
        "Calibrated inverse temperature β along the path: β > 1 sharpens the merged model's "
        "shrunken logits, as LEWC predicts ((1-λ)^L + λ^L < 1)."
    )


def cosine_per_layer(res: xr.Dataset, lams: Sequence[float] = (0.3, 0.5)):
    fig, axes = plt.subplots(1, len(lams), figsize=(5 * len(lams), 3.6), squeeze=False)
    depth = res.depth.values
    for ax, lam in zip(axes[0], lams, strict=True):
        sel = res.sel(lam=lam, method="nearest")
        ax.plot(depth, sel.cos_lewc, marker="o", label="LEWC (1-λ)^ℓ, λ^ℓ")
        ax.plot(depth, sel.cos_llfc, marker="s", label="LLFC (1-λ), λ")
        ax.plot(depth, 1 - sel.rel_err_lewc, ls="--", marker="o", ms=3, label="1 − rel. err. LEWC")
        ax.plot(depth, 1 - sel.rel_err_llfc, ls="--", marker="s", ms=3, label="1 − rel. err. LLFC")
        ax.set_title(f"λ = {float(sel.lam):.2f}")
        ax.set_xlabel("layer depth ℓ")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("agreement with merged output")
    axes[0][0].legend(fontsize=7)
    return fig, (
        "Per layer, how well the LEWC and LLFC predictions match the merged model's output "
        "(mean per-image cosine, and 1 − relative error over all images)."
    )


def coefficients(res: xr.Dataset):
    layers = list(res.layer.values)
    fig, axes = plt.subplots(1, len(layers), figsize=(3 * len(layers), 3.2), squeeze=False, sharey=True)
    lam = res.lam.values
    for ax, name in zip(axes[0], layers, strict=True):
        sel = res.sel(layer=name)
        ell = int(sel.depth)
        ci = sel.coef_ci.values
        ax.errorbar(lam, sel.coef_a, yerr=np.abs(ci[:, 0, :].T - sel.coef_a.values), fmt="o", ms=3, label="a (fit)")
        ax.errorbar(lam, sel.coef_b, yerr=np.abs(ci[:, 1, :].T - sel.coef_b.values), fmt="s", ms=3, label="b (fit)")
        fine = np.linspace(0, 1, 101)
        ax.plot(fine, (1 - fine) ** ell, color="C0", lw=1, label="(1-λ)^ℓ")
        ax.plot(fine, fine**ell, color="C1", lw=1, label="λ^ℓ")
        ax.plot(fine, 1 - fine, color="gray", lw=0.8, ls=":", label="LLFC")
        ax.set_title(f"{name} (ℓ={ell})", fontsize=9)
        ax.set_xlabel("λ")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=6)
    return fig, (
        "OLS coefficients of the merged output on the endpoint outputs (statsmodels, image-clustered "
        "95% CI) against the LEWC weights (1-λ)^ℓ and λ^ℓ."
    )


def exponent_vs_depth(results: Sequence[xr.Dataset]):
    fig, ax = plt.subplots(figsize=(5, 3.6))
    top = 1
    for res in sorted(results, key=_width):
        d = res.depth.values
        k = res.exponent.values
        err = np.abs(np.stack([res.exponent_k_lo.values, res.exponent_k_hi.values]) - k)
        ax.errorbar(d, k, yerr=err, marker="o", ms=3, capsize=2, label=_label(res))
        top = max(top, int(d.max()))
    ax.plot([1, top], [1, top], color="gray", ls="--", lw=1, label="LEWC: k = ℓ")
    ax.axhline(1, color="gray", ls=":", lw=1, label="LLFC: k = 1")
    ax.set_xlabel("layer depth ℓ")
    ax.set_ylabel("effective exponent k_ℓ")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return fig, "Effective exponent: WLS slope of log(a/b) on log((1-λ)/λ), 95% CI, per layer."


def conditions_vs_width(results: Sequence[xr.Dataset]):
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
    for res in sorted(results, key=_width):
        mid = res.sel(lam=0.5, method="nearest")
        line = axes[0].plot(res.depth, mid.weak_additivity, marker="o", label=_label(res))[0]
        axes[0].plot(res.depth, mid.weak_additivity_null, ls=":", color=line.get_color())
        axes[1].plot(res.depth, res.ro_b_on_a, marker="o", color=line.get_color(), label=_label(res))
        axes[1].plot(res.depth, res.ro_a_on_b, marker="s", ls="--", color=line.get_color())
    axes[0].set_title("weak additivity at λ = ½ (dotted: B's units shuffled)", fontsize=9)
    axes[1].set_title("reciprocal orthogonality ‖W_B z_A‖/‖W_A z_A‖ (o), mirror (s)", fontsize=9)
    for ax in axes:
        ax.set_xlabel("layer depth ℓ")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    return fig, "The two sufficient conditions of the paper's theorem, per layer, for each width."


def ensemble_agreement(results: Sequence[xr.Dataset]):
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for res in sorted(results, key=_width):
        line = axes[0].plot(res.lam, res.ens_agreement.sel(kind="lewc"), marker="o", ms=3, label=_label(res))[0]
        axes[0].plot(res.lam, res.ens_agreement.sel(kind="plain"), ls=":", color=line.get_color())
        axes[1].plot(res.lam, res.ens_kl.sel(kind="lewc"), marker="o", ms=3, color=line.get_color())
    axes[0].set_title("top-1 agreement merged vs LEWC ensemble (dotted: plain)", fontsize=9)
    axes[1].set_title("KL(merged ‖ LEWC ensemble), calibrated", fontsize=9)
    for ax in axes:
        ax.set_xlabel("λ")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    return fig, "Merged model against the ensembles of its endpoints (each calibrated on the calib split)."


def barrier_vs_width(sweep: xr.Dataset):
    """Barriers at λ = ½ against width, mean over pairs with the per-pair values as points."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    widths = sweep.width.values
    for ax, names, title in (
        (axes[0], ["acc_mid"], "accuracy barrier at λ = ½ (pp)"),
        (axes[1], ["loss_mid_raw", "loss_mid_cal"], "loss barrier at λ = ½"),
    ):
        methods = alignments(sweep)
        for name in names:
            color = None
            for method, style in zip(methods, ["-", "--", ":", "-."], strict=False):
                sel = sweep.barrier.sel(barrier_name=name)
                vals = for_alignment(sel, method).transpose("width", "pair").values
                mean = np.nanmean(vals, axis=1)
                label = name if method == "none" else f"{name}, {method} matching"
                line = ax.plot(widths, mean, marker="o", ls=style, color=color, label=label)[0]
                color = line.get_color()
                for p in range(vals.shape[1]):
                    ax.scatter(widths, vals[:, p], color=color, s=10, alpha=0.6)
        ax.axhline(0, color="gray", lw=0.8)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("width multiplier")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return fig, (
        "Barriers at λ = ½ against width, without permutation (solid) and after alignment (dashed): "
        "line = mean over seed pairs, dots = individual pairs."
    )


def beta_vs_width(sweep: xr.Dataset):
    sweep = for_alignment(sweep)
    fig, ax = plt.subplots(figsize=(5, 3.6))
    for lam in (0.0, 0.3, 0.5):
        vals = sweep.beta.sel(lam=lam, method="nearest").values
        ax.plot(sweep.width.values, np.nanmean(vals, axis=1), marker="o", label=f"λ = {lam}")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("width multiplier")
    ax.set_ylabel("β (mean over pairs)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return fig, "Fitted inverse temperature against width."


def path_by_alignment(stacked: xr.Dataset):
    """Test accuracy and calibrated loss along λ for B as trained and for every alignment of B."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for method in stacked["align"].values:
        res = stacked.sel(align=method)
        test = res.sel(split="test")
        label = "no permutation" if method == "none" else str(method).replace("_", " ")
        axes[0].plot(res.lam.values, 100 * test.acc.values, marker="o", ms=3, label=label)
        axes[1].plot(res.lam.values, test.loss_cal.values, marker="o", ms=3, label=label)
    for ax, title in zip(axes, ["test accuracy (%)", "calibrated test loss"], strict=True):
        ax.set_xlabel("λ (0 = A, 1 = B)")
        ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return fig, (
        "The path from A to B without permutation and after each alignment of B (random direction: A moved "
        "as far as B in a random direction, tensor by tensor)."
    )


def pair_figures(res: xr.Dataset, out_dir: Path, stacked: xr.Dataset | None = None) -> list[tuple[str, str]]:
    """All single-pair figures into ``out_dir``; returns (file stem, caption) pairs."""
    figures = [
        ("accuracy_loss", accuracy_loss_vs_lambda([res])),
        ("beta", beta_vs_lambda([res])),
        ("ensemble", ensemble_agreement([res])),
    ]
    if "cos_lewc" in res:
        figures += [
            ("cosine_per_layer", cosine_per_layer(res)),
            ("coefficients", coefficients(res)),
            ("exponent", exponent_vs_depth([res])),
            ("conditions", conditions_vs_width([res])),
        ]
    if stacked is not None and "align" in stacked.dims and stacked.sizes["align"] > 1:
        figures.append(("path_by_alignment", path_by_alignment(stacked)))
    out = []
    for stem, (fig, caption) in figures:
        save(fig, out_dir / stem)
        out.append((stem, caption))
    return out
