"""Figures drawn from stored results Datasets only (never from a model).

Each function takes results Datasets (one pair, or several with their ``width`` attribute), draws
one figure and returns ``(figure, caption)``. ``save`` writes PNG and PDF atomically.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import xarray as xr  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from lewc.core.io import atomic_path  # noqa: E402
from lewc.reporting.results import alignments, attr_meta, for_alignment  # noqa: E402


def _width(res: xr.Dataset) -> int:
    return int(attr_meta(res, "sidecar_a", ("width",)).width)


def _label(res: xr.Dataset) -> str:
    meta_a, meta_b = attr_meta(res, "sidecar_a", ("width", "seed")), attr_meta(res, "sidecar_b", ("seed",))
    return f"×{meta_a.width} (seeds {meta_a.seed},{meta_b.seed})"


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


ALIGN_STYLE = {"none": "-", "weights": "--", "activations": "-.", "random": ":", "random_direction": ":"}
ALIGN_MARKER = {"none": "o", "weights": "s", "activations": "^", "random": "v", "random_direction": "d"}


ENSEMBLE_STYLE = (("lewc", (0, (5, 2)), "x", "black"), ("plain", (0, (1, 1.5)), "+", "C2"))
ENSEMBLE_LABEL = {"lewc": "LEWC ensemble (1-λ)^L z_A + λ^L z_B", "plain": "plain ensemble (1-λ) z_A + λ z_B"}


def _align_color(method: str) -> str:
    """One colour per alignment method; a method registered later gets the next free colour."""
    names = list(ALIGN_STYLE)
    return f"C{names.index(method) if method in names else len(names) + sum(map(ord, method)) % 5}"


def _align_label(method: str) -> str:
    return "no permutation" if method == "none" else f"{method.replace('_', ' ')} matching"


def _by_alignment(results: Sequence[xr.Dataset]):
    """(results slice, alignment, colour index) for every pair and every alignment it holds."""
    for ci, res in enumerate(sorted(results, key=_width)):
        for method in alignments(res):
            yield for_alignment(res, method), method, ci


def accuracy_loss_vs_lambda(results: Sequence[xr.Dataset]):
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    many = len(results) > 1
    for res, method, ci in _by_alignment(results):
        lam = res.lam.values
        test = res.sel(split="test")
        label = f"{_label(res)}, {_align_label(method)}" if many else _align_label(method)
        style = {"color": f"C{ci}" if many else _align_color(method), "ms": 3}
        style |= {"ls": ALIGN_STYLE.get(method, "-"), "marker": ALIGN_MARKER.get(method, "o")}
        axes[0].plot(lam, test.acc, label=label, **style)
        axes[1].plot(lam, test.loss, **style)
        axes[2].plot(lam, test.loss_cal, **style)
    titles = ("test accuracy (%)", "test loss at β = 1 (nats)", "test loss at the calibrated β (nats)")
    for ax, title in zip(axes, titles, strict=True):
        ax.set_xlabel("λ  (θ = (1-λ)θ_A + λθ_B)")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("%")
    axes[1].set_ylabel("nats")
    axes[2].set_ylabel("nats")
    axes[0].legend(fontsize=7)
    return fig, (
        "Accuracy and loss along the linear path, without permutation (solid) and after weight matching "
        "(dashed); the calibrated loss uses one inverse temperature per λ fitted on the calib split."
    )


def beta_vs_lambda(results: Sequence[xr.Dataset]):
    """β along the path for every alignment, with the β that LEWC predicts (that of the LEWC ensemble)."""
    fig, ax = plt.subplots(figsize=(6, 4))
    many = len(results) > 1
    for res, method, ci in _by_alignment(results):
        color = f"C{ci}" if many else _align_color(method)
        label = f"{_label(res)}, {_align_label(method)}" if many else f"merged, {_align_label(method)}"
        ax.plot(res.lam, res.beta, color=color, ls=ALIGN_STYLE.get(method, "-"), marker=ALIGN_MARKER.get(method, "o"))
        ax.lines[-1].set_label(label)
        ax.lines[-1].set_markersize(4)
        if "ens_beta" in res and (method == "none" or many):
            ax.plot(
                res.lam,
                res.ens_beta.sel(kind="lewc"),
                color="black" if not many else color,
                ls=(0, (4, 2)) if method == "none" else (0, (1, 2)),
                lw=1.2,
                label="LEWC prediction: β of (1-λ)^L z_A + λ^L z_B" + ("" if method == "none" else f" ({method})"),
            )
    ax.axhline(1, color="gray", lw=0.8, ls=":")
    ax.set_xlabel("λ")
    ax.set_ylabel("fitted inverse temperature β (linear)")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return fig, (
        "Calibrated inverse temperature β along the path, without permutation and after weight matching. "
        "Black dashed: LEWC's prediction, the β that calibrates the LEWC ensemble (1-λ)^L z_A + λ^L z_B of "
        "the unaligned endpoints (at λ = ½: 2^(L−1) × the plain ensemble's β); β = 1 dotted."
    )


def path(stacked: xr.Dataset):
    """Accuracy and calibrated loss vs λ for every alignment, both ensembles, and 95% bootstrap bands.

    The bands are ``acc_ci`` and ``loss_cal_ci`` (image bootstrap, the claims' resamples); the
    ensembles are lines.
    """
    fig, axes = plt.subplots(1, 2, figsize=(11.5, 4))
    for method in alignments(stacked):
        res = for_alignment(stacked, method)
        lam = res.lam.values
        color = _align_color(method)
        test = res.sel(split="test")
        label = f"merged, {_align_label(method)}"
        for ax, var in ((axes[0], "acc"), (axes[1], "loss_cal")):
            line = ax.plot(lam, test[var], color=color, marker=ALIGN_MARKER.get(method, "o"), ms=4, label=label)[0]
            band = f"{var}_ci"
            if band in res:
                lo, hi = res[band].sel(bound="lo").values, res[band].sel(bound="hi").values
                ax.fill_between(lam, lo, hi, color=line.get_color(), alpha=0.25, lw=0)
            if "ens_acc" in res and method == "none":  # permuting B leaves its function, so the ensembles, unchanged
                ens = res.ens_acc if var == "acc" else res.ens_loss_cal
                for kind, ls, mk, ens_color in ENSEMBLE_STYLE:
                    style = {"color": ens_color, "ls": ls, "marker": mk, "ms": 7, "lw": 1.2, "zorder": 4}
                    ax.plot(lam, ens.sel(kind=kind), label=ENSEMBLE_LABEL[kind], **style)  # on top: may coincide
    axes[0].set_title("test accuracy (%)", fontsize=10)
    axes[1].set_title("test loss at the calibrated β (nats)", fontsize=10)
    axes[0].set_ylabel("%")
    axes[1].set_ylabel("nats")
    for ax in axes:
        ax.set_xlabel("λ (0 = A, 1 = B)")
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=7, loc="lower center", ncol=2, bbox_to_anchor=(0.5, -0.1))
    return fig, (
        "The path from A to B without permutation and after weight matching: merged model (markers, shaded "
        "95% bootstrap band over test images), LEWC ensemble (1-λ)^L z_A + λ^L z_B (black dashed, ×) and plain "
        "ensemble (1-λ) z_A + λ z_B (green dotted, +) of the endpoints, each calibrated on the calib split "
        "(permuting B does not change the ensembles)."
    )


def cosine_per_layer(res: xr.Dataset, lams: Sequence[float] = (0.3, 0.5)):
    """Two rows: per-image cosine (top) and relative error over all images (bottom), one column per λ."""
    res = for_alignment(res)
    fig, axes = plt.subplots(2, len(lams), figsize=(5 * len(lams), 6), squeeze=False, sharex=True)
    depth = res.depth.values
    for j, lam in enumerate(lams):
        sel = res.sel(lam=lam, method="nearest")
        top, bottom = axes[0][j], axes[1][j]
        top.plot(depth, sel.cos_lewc, marker="o", label="LEWC (1-λ)^ℓ, λ^ℓ")
        top.plot(depth, sel.cos_llfc, marker="s", ls="--", label="LLFC (1-λ), λ")
        bottom.plot(depth, sel.rel_err_lewc, marker="o", label="LEWC")
        bottom.plot(depth, sel.rel_err_llfc, marker="s", ls="--", label="LLFC")
        top.set_title(f"λ = {float(sel.lam):.2f}")
        bottom.set_xlabel("layer depth ℓ")
        bottom.xaxis.set_major_locator(MaxNLocator(integer=True))
        for ax in (top, bottom):
            ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("mean cosine with the merged output")
    axes[1][0].set_ylabel("relative error ‖m − p‖/‖m‖")
    axes[0][0].legend(fontsize=7)
    return fig, (
        "Per layer, how well the LEWC and LLFC predictions p match the merged model's output m: mean "
        "per-image cosine (top) and relative error over all images (bottom, 0 is exact)."
    )


def coefficients(res: xr.Dataset):
    res = for_alignment(res)
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
    """Both estimators of k_ℓ (docs/conventions.md): k_coord with its WLS interval, k_gram with its bootstrap one."""
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    top = 1
    for i, res in enumerate(sorted(results, key=_width)):
        res = for_alignment(res)
        d = res.depth.values.astype(float)
        for key, mk, shift in (("k_coord", "o", -0.06), ("k_gram", "s", 0.06)):
            if key not in res:
                continue
            k = res[key].values
            err = np.abs(res[f"{key}_ci"].values.T - k) if f"{key}_ci" in res else None
            label = key if len(results) == 1 else f"{key}, {_label(res)}"
            ax.errorbar(
                d + shift,
                k,
                yerr=err,
                marker=mk,
                ms=4,
                capsize=2,
                color=f"C{i}" if len(results) > 1 else ("C0" if key == "k_coord" else "C1"),
                label=label,
                ls="-" if key == "k_coord" else "--",
            )
        top = max(top, int(d.max()))
    ax.plot([1, top], [1, top], color="gray", ls="--", lw=1, label="LEWC: k = ℓ")
    ax.axhline(1, color="gray", ls=":", lw=1, label="LLFC: k = 1")
    ax.set_xlabel("layer depth ℓ")
    ax.set_ylabel("effective exponent k_ℓ")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return fig, (
        "Effective exponent per layer, slope of log(a/b) on log((1-λ)/λ): k_coord from the coordinate fits "
        "(WLS, 95% CI from the fit) and k_gram from the Gram sums over all images (95% image bootstrap)."
    )


def conditions_vs_width(results: Sequence[xr.Dataset]):
    """The two conditions with the nulls the verdicts use (pairing null; shuffled-input null)."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    for i, res in enumerate(sorted(results, key=_width)):
        res = for_alignment(res)
        mid = res.sel(lam=0.5, method="nearest")
        color = f"C{i}"
        tag = "" if len(results) == 1 else f", {_label(res)}"
        axes[0].plot(res.depth, mid.weak_additivity, marker="o", color=color, label="weak additivity" + tag)
        axes[0].plot(res.depth, mid.weak_additivity_null, marker="x", ls=":", color=color, label="pairing null" + tag)
        axes[1].plot(res.depth, res.ro_b_on_a, marker="o", color=color, label="‖W_B z_A‖/‖W_A z_A‖" + tag)
        axes[1].plot(res.depth, res.ro_a_on_b, marker="s", ls="--", color=color, label="‖W_A z_B‖/‖W_B z_B‖" + tag)
        if "ro_b_on_a_null" in res:
            axes[1].plot(res.depth, res.ro_b_on_a_null, marker="x", ls=":", color=color, label="null, B on A" + tag)
            axes[1].plot(res.depth, res.ro_a_on_b_null, marker="+", ls=":", color=color, label="null, A on B" + tag)
    axes[0].set_title("weak additivity cosine at λ = ½ vs the pairing null (B's units shuffled)", fontsize=9)
    axes[1].set_title("reciprocal orthogonality vs the shuffled-input null", fontsize=9)
    axes[0].set_ylabel("cosine")
    axes[1].set_ylabel("norm ratio")
    for ax in axes:
        ax.set_xlabel("layer depth ℓ")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return fig, (
        "The two sufficient conditions of the paper's theorem per layer, each with the null its verdict "
        "is measured against: weak additivity (verdict: (cos − null)/(1 − null) ≥ ½) and reciprocal "
        "orthogonality (verdict: ratio / null ≤ ½)."
    )


def ensemble_agreement(results: Sequence[xr.Dataset]):
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for i, res in enumerate(sorted(results, key=_width)):
        res = for_alignment(res)
        tag = "" if len(results) == 1 else f", {_label(res)}"
        for kind, ls, mk, off in (("lewc", "-", "o", 0.0), ("plain", (0, (4, 2)), "s", 0.006)):
            name = "LEWC" if kind == "lewc" else "plain"
            style = {"color": f"C{i}" if len(results) > 1 else ("C0" if kind == "lewc" else "C3")}
            style |= {
                "ls": ls,
                "marker": mk,
                "ms": 4 if kind == "lewc" else 6,
                "mfc": "none" if kind == "plain" else None,
            }
            axes[0].plot(res.lam + off, res.ens_agreement.sel(kind=kind), label=f"{name} ensemble" + tag, **style)
            axes[1].plot(res.lam + off, res.ens_kl.sel(kind=kind), label=f"{name} ensemble" + tag, **style)
    axes[0].set_title("top-1 agreement of merged and ensemble", fontsize=9)
    axes[0].set_ylabel("fraction of test images")
    axes[1].set_title("KL(merged ‖ ensemble), calibrated (nats)", fontsize=9)
    axes[1].set_ylabel("nats")
    for ax in axes:
        ax.set_xlabel("λ")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return fig, (
        "Merged model against the LEWC ensemble (1-λ)^L z_A + λ^L z_B (solid, filled) and the plain "
        "ensemble (1-λ) z_A + λ z_B (dashed, open, shifted right by 0.006 so that equal values stay "
        "visible), each calibrated on the calib split."
    )


def pair_figures(res: xr.Dataset, out_dir: Path, stacked: xr.Dataset | None = None) -> list[tuple[str, str]]:
    """All single-pair figures into ``out_dir``; returns (file stem, caption) pairs."""
    stacked = res if stacked is None else stacked
    figures = [
        ("path", path(stacked)),
        ("accuracy_loss", accuracy_loss_vs_lambda([stacked])),
        ("beta", beta_vs_lambda([stacked])),
        ("ensemble", ensemble_agreement([res])),
    ]
    if "cos_lewc" in res:
        figures += [
            ("cosine_per_layer", cosine_per_layer(res)),
            ("coefficients", coefficients(res)),
            ("exponent", exponent_vs_depth([res])),
            ("conditions", conditions_vs_width([res])),
        ]
    out = []
    for stem, (fig, caption) in figures:
        save(fig, out_dir / stem)
        out.append((stem, caption))
    return out
