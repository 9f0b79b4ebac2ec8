"""Figures of a study (``study.nc`` from ``lewc.commands.study``), each answering one question.

* barrier against width, one curve per weight decay, without (solid) and with weight matching
  (dashed): where does permutation-free LMC hold, and what do permutations add?
* β at λ = ½ against width (and against depth when depth is an axis), with the LEWC reference
  2^(L−1): at λ = ½ the LEWC ensemble's logits are 2^(1−L) times the mean of the endpoints'
  logits, so where LEWC holds the calibrated β should
  approach 2^(L−1) (exactly so for bias-free ReLU networks);
* the magnitude a + b of each layer's merged output at λ = ½ against ℓ, with the LEWC line (½)^(ℓ−1)
  and the LLFC line 1;
* a weight-decay × epochs heat map of the calibrated barrier.

Axes not drawn in a figure are *facets*: one figure per combination of their values, named by it.
Curves are means over seed pairs; dots are the individual pairs.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import xarray as xr

from lewc.reporting.plots import plt, save

GRID_AXES = ("width", "wd", "epochs", "bias", "depth", "norm", "lr", "base_width")


def _axes(ds: xr.Dataset) -> list[str]:
    return [a for a in GRID_AXES if a in ds.dims]


def _facets(ds: xr.Dataset, drawn: tuple[str, ...]):
    """(suffix, selection) for every combination of the axes a figure does not draw."""
    others = [a for a in _axes(ds) if a not in drawn]
    for values in itertools.product(*(ds[a].values.tolist() for a in others)):
        sel = dict(zip(others, values, strict=True))
        suffix = "_".join(f"{a}{v}" for a, v in sel.items() if ds.sizes[a] > 1)  # a fixed axis names nothing
        yield suffix, sel


def _title(sel: dict) -> str:
    return ", ".join(f"{a} = {v}" for a, v in sel.items()) or "all cells"


def barrier_vs_width(ds: xr.Dataset, sel: dict):
    sub = ds.sel(sel)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    wds = sub["wd"].values if "wd" in sub.dims else [None]
    for ax, name, label in (
        (axes[0], "acc_mid", "accuracy barrier at λ = ½ (pp)"),
        (axes[1], "loss_mid_cal", "calibrated loss barrier at λ = ½ (nats)"),
    ):
        for wd in wds:
            cell = sub.sel(wd=wd) if wd is not None else sub
            color = None
            for method, style in zip(cell.align.values, ["-", "--", ":"], strict=False):
                vals = cell.barrier.sel(barrier_name=name, align=method).transpose("width", "pair").values
                lab = f"wd {wd:g}" if wd is not None else "barrier"
                lab += "" if method == "none" else f", {method} matching"
                line = ax.plot(sub.width.values, np.nanmean(vals, 1), ls=style, marker="o", color=color, label=lab)[0]
                color = line.get_color()
                for p in range(vals.shape[1]):
                    ax.scatter(sub.width.values, vals[:, p], color=color, s=9, alpha=0.5)
        ax.axhline(0, color="gray", lw=0.8)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("width multiplier")
        ax.set_title(label, fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
    fig.suptitle(_title(sel), fontsize=9)
    return fig, (
        f"Barrier at λ = ½ against width ({_title(sel)}): solid without permutation, dashed after weight "
        "matching; one colour per weight decay; lines are means over seed pairs, dots single pairs."
    )


def beta_vs_width(ds: xr.Dataset, sel: dict):
    sub = ds.sel(sel).sel(align="none")
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    wds = sub["wd"].values if "wd" in sub.dims else [None]
    for wd in wds:
        cell = sub.sel(wd=wd) if wd is not None else sub
        vals = cell.beta_mid.transpose("width", "pair").values
        ax.plot(sub.width.values, np.nanmean(vals, 1), marker="o", label=f"wd {wd:g}" if wd is not None else "β")
    depth = np.nanmax(sub.total_depth.values)
    if np.isfinite(depth):
        ax.axhline(
            2 ** (depth - 1), color="black", ls="--", lw=1, label=f"LEWC reference 2^(L−1) = {2 ** (depth - 1):g}"
        )
    ax.axhline(1, color="gray", lw=0.8, label="β = 1 (no rescaling)")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log", base=2)
    ax.set_xlabel("width multiplier")
    ax.set_ylabel("calibrated β at λ = ½")
    ax.set_title(_title(sel), fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6)
    return fig, (
        f"Calibrated inverse temperature of the merged model at λ = ½ against width ({_title(sel)}), with the "
        "value LEWC predicts, 2^(L−1) for L weight layers."
    )


def beta_vs_depth(ds: xr.Dataset, sel: dict):
    """β at λ = ½ against the network's number of weight layers L, with the LEWC reference 2^(L−1)."""
    sub = ds.sel(sel).sel(align="none")
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    widths = sub["width"].values if "width" in sub.dims else [None]
    for w in widths:
        cell = sub.sel(width=w) if w is not None else sub
        L = cell.total_depth.mean("pair").values
        beta = cell.beta_mid.transpose("depth", "pair").values
        ax.plot(L, np.nanmean(beta, 1), marker="o", label=f"×{w}" if w is not None else "β")
    all_l = np.unique(sub.total_depth.values[np.isfinite(sub.total_depth.values)])
    ax.plot(all_l, 2 ** (all_l - 1), color="black", ls="--", label="LEWC reference 2^(L−1)")
    ax.set_yscale("log", base=2)
    ax.set_xlabel("weight layers L")
    ax.set_ylabel("calibrated β at λ = ½")
    ax.set_title(_title(sel), fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6)
    return fig, f"Calibrated β at λ = ½ against depth ({_title(sel)}), one curve per width, with 2^(L−1)."


def magnitude_vs_depth(ds: xr.Dataset, sel: dict):
    sub = ds.sel(sel)
    widest = sub.width.values.max() if "width" in sub.dims else None
    cell = sub.sel(width=widest) if widest is not None else sub
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    ell = cell.ell.values
    wds = cell["wd"].values if "wd" in cell.dims else [None]
    for wd in wds:
        c = cell.sel(wd=wd) if wd is not None else cell
        for method, style in zip(c.align.values, ["-", "--"], strict=False):
            da = c.magnitude_mid.sel(align=method)
            da = da.squeeze([d for d in da.dims if d not in ("pair", "ell") and da.sizes[d] == 1], drop=True)
            vals = da.transpose("pair", "ell", ...).values.reshape(da.sizes["pair"], da.sizes["ell"], -1).mean(-1)
            lab = (f"wd {wd:g}" if wd is not None else "a + b") + ("" if method == "none" else f", {method}")
            ax.plot(ell, np.nanmean(vals, 0), marker="o", ls=style, label=lab)
    ax.plot(ell, 0.5 ** (ell - 1.0), color="black", ls=":", label="LEWC (½)^(ℓ−1)")
    ax.axhline(1, color="gray", lw=0.8, label="LLFC 1")
    ax.set_yscale("log", base=2)
    ax.set_xlabel("layer depth ℓ")
    ax.set_ylabel("a + b at λ = ½")
    ax.set_title(f"width ×{widest}, {_title(sel)}", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6)
    return fig, (
        f"How much the merged layer output shrinks at λ = ½ (a + b of the fit on the endpoints' outputs) against "
        f"depth, widest width ×{widest} ({_title(sel)}); LEWC predicts (½)^(ℓ−1), LLFC 1."
    )


def heatmap_wd_epochs(ds: xr.Dataset, sel: dict):
    sub = ds.sel(sel).sel(align="none", barrier_name="loss_mid_cal")
    widest = sub.width.values.max()
    vals = sub.sel(width=widest).barrier.transpose("wd", "epochs", "pair").values
    mean = np.nanmean(vals, axis=2)
    fig, ax = plt.subplots(figsize=(4.8, 3.6))
    im = ax.imshow(mean, cmap="viridis", origin="lower", aspect="auto")
    ax.set_xticks(range(mean.shape[1]), [str(v) for v in sub.epochs.values])
    ax.set_yticks(range(mean.shape[0]), [f"{v:g}" for v in sub.wd.values])
    for i, j in itertools.product(range(mean.shape[0]), range(mean.shape[1])):
        ax.text(j, i, f"{mean[i, j]:.3f}", ha="center", va="center", color="white", fontsize=8)
    ax.set_xlabel("epochs")
    ax.set_ylabel("weight decay")
    ax.set_title(f"calibrated loss barrier, ×{widest}, {_title(sel)}", fontsize=9)
    fig.colorbar(im, ax=ax)
    return fig, (
        f"Calibrated loss barrier at λ = ½ without permutation over weight decay × training length, width "
        f"×{widest} ({_title(sel)}), mean over seed pairs."
    )


def study_figures(ds: xr.Dataset, out_dir: Path, prefix: str, formats=("png",)) -> list[tuple[str, str]]:
    """Every study figure into ``out_dir``; returns (stem, caption) pairs."""
    made = []
    axes = _axes(ds)
    jobs = []
    if "width" in axes:
        jobs += [("barrier_vs_width", barrier_vs_width, ("width", "wd"))]
        jobs += [("beta_vs_width", beta_vs_width, ("width", "wd"))]
    if "depth" in axes and ds.sizes["depth"] > 1:
        jobs += [("beta_vs_depth", beta_vs_depth, ("width", "depth"))]
    if "magnitude_mid" in ds:
        jobs += [("magnitude_vs_depth", magnitude_vs_depth, ("width", "wd"))]
    if {"wd", "epochs", "width"} <= set(axes):
        jobs += [("heatmap_wd_epochs", heatmap_wd_epochs, ("width", "wd", "epochs"))]
    for stem, draw, drawn in jobs:
        for suffix, sel in _facets(ds, drawn):
            name = f"{prefix}_{stem}" + (f"_{suffix}" if suffix else "")
            fig, caption = draw(ds, sel)
            save(fig, out_dir / name, formats)
            made.append((name, caption))
    return made
