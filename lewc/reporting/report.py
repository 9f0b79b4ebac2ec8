"""``report.json`` (schema ``lewc.report/2``, JSON Schema in report.schema.json), ``report.md`` and the verdict
table, from stored results."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import xarray as xr

from lewc.models import family_names, width_label
from lewc.reporting.results import (
    BARRIER_NAMES,
    PAPER_LAMS,
    PAPER_STATISTICS,
    WEAK_ADDITIVITY_REFERENCES,
    alignments,
    attr_json,
    attr_meta,
    barrier,
    barrier_ci,
    barrier_units,
    for_alignment,
    lewc_position,
    paper_statistics,
)
from lewc.stats.claims import Claim, claims_as_dicts, compared_alignment, specs_as_dicts
from lewc.training.checkpoints import CheckpointMeta

REPORT_SCHEMA = "lewc.report/2"  # validated by report.schema.json (package data beside this module)

# ``controls_status``: whether the controls' results are in the folder (they are published after the main
# results, so a control that fails leaves the main results published: docs/conventions.md)
CONTROLS_NOT_REQUESTED = "not requested"
CONTROLS_COMPLETE = "complete"
CONTROLS_PENDING = "pending: the main results are published first; the controls run next (a rerun completes them)"


def controls_failed(name: str, why: str) -> str:
    """The one-line ``controls_status`` of a run whose ``name`` control failed with ``why``."""
    first = why.strip().splitlines()[0] if why.strip() else "no message"
    return f"failed: the {name} control: {first} (the main results stand; a rerun with the same options completes them)"


def controls_done(report: dict) -> bool:
    """Whether ``report`` holds every control it asked for (a report written before the status existed
    was written after its controls: complete)."""
    return report.get("controls_status", CONTROLS_COMPLETE) in (CONTROLS_COMPLETE, CONTROLS_NOT_REQUESTED)


def controls_block(
    controls: dict[str, xr.Dataset] | None,
    control_claims: dict[str, list[Claim]] | None = None,
    absent: dict[str, str] | None = None,
) -> dict:
    """report.json's ``controls``: each control's note and claims; a control that cannot be built, why."""
    block = {
        name: {"note": c.attrs.get("control_note", ""), "claims": claims_as_dicts((control_claims or {}).get(name, []))}
        for name, c in (controls or {}).items()
    }
    for name, why in (absent or {}).items():
        block[name] = {"note": f"absent: {why}", "claims": []}
    return clean(block)


def schema() -> dict:
    """The JSON Schema of report.json (``report.schema.json``, shipped beside this module)."""
    from importlib.resources import files

    return json.loads(files("lewc.reporting").joinpath("report.schema.json").read_text(encoding="utf-8"))


def clean(obj: Any) -> Any:
    """numpy → Python, NaN/inf → None, so the JSON is strict."""
    if isinstance(obj, dict):
        return {k: clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [clean(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return clean(obj.tolist())
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def _v(da: xr.DataArray) -> list:
    return da.values.tolist()


def _width_label(meta: CheckpointMeta | None) -> str | None:
    """The pair's width in units (``MLP ×16 (3×8192)``); ``None`` for a family lewc does not know."""
    if meta is None or meta.model not in family_names():
        return None
    return width_label(meta.model, int(meta.width), meta.base_width, meta.depth)


def build_report(
    res: xr.Dataset,
    claims: list[Claim],
    files: dict,
    command: str,
    controls: dict[str, xr.Dataset] | None = None,
    control_claims: dict[str, list[Claim]] | None = None,
    align_claims: dict[str, list[Claim]] | None = None,
    absent_controls: dict[str, str] | None = None,
    controls_status: str = CONTROLS_COMPLETE,
) -> dict:
    stacked, res = res, for_alignment(res)
    lams = [float(v) for v in res.lam.values]
    test = res.sel(split="test")
    report: dict[str, Any] = {
        "schema": REPORT_SCHEMA,
        "command": command,
        "lewc_version": res.attrs.get("lewc_version"),
        "lam_convention": res.attrs.get("lam_convention"),
        "pair": {"a": attr_json(res, "sidecar_a"), "b": attr_json(res, "sidecar_b")},
        "width_label": _width_label(attr_meta(res, "sidecar_a")),
        "endpoint_test_acc": endpoint_accuracies(res),
        "dataset": res.attrs.get("dataset"),
        "split_sizes": {
            "train": res.attrs.get("n_train"),
            "calib": res.attrs.get("n_calib"),
            "test": res.attrs.get("n_test"),
        },
        "bn_reestimated": bool(res.attrs.get("bn_reestimated")),
        "bn_images": res.attrs.get("bn_images"),
        "lams": lams,
        "metrics": {
            "split": "test",
            "units": {"acc": "%", "loss": "nats", "loss_cal": "nats", "beta": "1", "calib_acc": "%"},
            "acc": _v(test.acc),
            "loss": _v(test.loss),
            "loss_cal": _v(test.loss_cal),
            "beta": _v(res.beta),
            "calib_acc": _v(res.acc.sel(split="calib")),
        },
        "barriers": _barriers(res),
        "barrier_curves": {
            "acc": _v(res.barrier_acc_curve),
            "loss_raw": _v(res.barrier_loss_raw_curve),
            "loss_cal": _v(res.barrier_loss_cal_curve),
            "units": {"acc": "pp", "loss_raw": "nats", "loss_cal": "nats"},
        },
        "layers": [],
        "ensemble": {
            str(kind): {
                "agreement": _v(res.ens_agreement.sel(kind=kind)),
                "kl": _v(res.ens_kl.sel(kind=kind)),
                "cosine": _v(res.ens_cosine.sel(kind=kind)),
                "acc": _v(res.ens_acc.sel(kind=kind)),
                "loss_cal": _v(res.ens_loss_cal.sel(kind=kind)),
                "beta": _v(res.ens_beta.sel(kind=kind)),
            }
            for kind in res.kind.values
        },
        "claims": claims_as_dicts(claims),
        "paper_statistics": paper_block(res),
        "claim_specs": specs_as_dicts(),
        "controls": controls_block(controls, control_claims, absent_controls),
        "controls_status": controls_status,
        "files": files,
        "alignments": {
            method: alignment_summary(for_alignment(stacked, method), (align_claims or {}).get(method, []))
            for method in alignments(stacked)
        },
    }
    if "cos_lewc" in res:
        for name in res.layer.values:
            s = res.sel(layer=name)
            report["layers"].append(
                {
                    "name": str(name),
                    "depth": int(s.depth),
                    **(
                        {"depth_eff": _v(s.depth_eff), "depth_eff_reason": str(s.depth_eff_reason.values)}
                        if "depth_eff" in s.coords
                        else {}
                    ),
                    "coef_a": _v(s.coef_a),
                    "coef_a_ci": _v(s.coef_ci.sel(coef="a")),
                    "coef_b": _v(s.coef_b),
                    "coef_b_ci": _v(s.coef_ci.sel(coef="b")),
                    "coef_a_full": _v(s.coef_a_full),
                    "coef_b_full": _v(s.coef_b_full),
                    "r2": _v(s.r2),
                    "r2_full": _v(s.r2_full),
                    "cos_lewc": _v(s.cos_lewc),
                    "cos_llfc": _v(s.cos_llfc),
                    "rel_err_lewc": _v(s.rel_err_lewc),
                    "rel_err_llfc": _v(s.rel_err_llfc),
                    "k_coord": {"value": float(s.k_coord), "ci": _v(s.k_coord_ci)},
                    "k_gram": {"value": float(s.k_gram), "ci": _v(s.k_gram_ci) if "k_gram_ci" in s else [None, None]},
                    "lewc_position": float(lewc_position(s.k_gram.values, s.depth.values)),
                    "weak_additivity": _v(s.weak_additivity),
                    "weak_additivity_null": _v(s.weak_additivity_null),
                    "reciprocal_orthogonality": {
                        "b_on_a": float(s.ro_b_on_a),
                        "a_on_b": float(s.ro_a_on_b),
                        "b_on_a_null": float(s.ro_b_on_a_null),
                        "a_on_b_null": float(s.ro_a_on_b_null),
                    },
                }
            )
    return clean(report)


def paper_block(res: xr.Dataset) -> dict:
    """The paper's own statistics per layer at λ ∈ PAPER_LAMS, beside lewc's verdicts (empty without layers).

    ``layers[i][name]`` is a list over ``lams`` for the per-λ statistics and a number for the others;
    ``definitions`` says what each is, ``references`` what the raw additivity cosine is read against.
    """
    ps = paper_statistics(res)
    block = {
        "lams": list(PAPER_LAMS),
        "definitions": dict(PAPER_STATISTICS),
        "references": {"weak_additivity": dict(WEAK_ADDITIVITY_REFERENCES)},
        "conditional_on": "this pair (one pair: no interval over pairs)",
        "layers": [],
    }
    for name in ps.layer.values if "layer" in ps.dims else []:
        s = ps.sel(layer=name)
        row = {"name": str(name), "depth": int(s.depth)}
        for var in ps.data_vars:
            row[var] = _v(s[var]) if "lam" in s[var].dims else float(s[var])
        block["layers"].append(row)
    return block


def paper_table(block: dict) -> list[str]:
    """report.md's table of the paper's statistics (cosines at each λ of ``block["lams"]``, the rest as is)."""
    if not block.get("layers"):
        return []
    lams = block["lams"]
    ref = block["references"]["weak_additivity"]
    mid = lams.index(0.5) if 0.5 in lams else None
    head = "| layer | ℓ | " + " | ".join(f"cos LEWC / LLFC at λ={lam:g}" for lam in lams)
    head += " | weak add. cos at ½ | cross terms B→A / A→B | R² at ½ | position t_ℓ (LLFC 0, LEWC 1) |"
    lines = [
        "",
        "## The paper's statistics beside lewc's",
        "",
        "Per layer, this pair only (conditional on it). Cosines of the merged output with the LEWC prediction "
        "(1-λ)^ℓ f_A + λ^ℓ f_B and with the LLFC prediction (1-λ) f_A + λ f_B; the raw weak-additivity cosine "
        f"(references: exact {ref['exact']:g}, independent Gaussians {ref['independent_gaussians_mid']:g} at ½); "
        "the raw cross-term ratios ‖W_B z_A‖/‖W_A z_A‖ and ‖W_A z_B‖/‖W_B z_B‖ (exact LEWC 0); the fit's R² "
        "(all images); t_ℓ = (k_gram − 1)/(ℓ − 1), the layer's signed position between LLFC and LEWC.",
        "",
        head,
        "|" + "---|" * (2 + len(lams) + 4),
    ]

    def at(row, key, j):
        return _fmt(row[key][j]) if key in row and j is not None else "n/a"

    for row in block["layers"]:
        cos = " | ".join(f"{at(row, 'cos_lewc', j)} / {at(row, 'cos_llfc', j)}" for j in range(len(lams)))
        lines.append(
            f"| {row['name']} | {row['depth']} | {cos} | {at(row, 'weak_additivity', mid)} "
            f"| {_fmt(row.get('ro_b_on_a'))} / {_fmt(row.get('ro_a_on_b'))} | {at(row, 'r2_full', mid)} "
            f"| {_fmt(row.get('lewc_position'), 2)} |"
        )
    return lines


def endpoint_accuracies(res: xr.Dataset) -> dict:
    """The endpoints' test accuracy as measured in this sweep (λ = 0 is A, λ = 1 is B), never a sidecar's."""
    acc = res.acc.sel(split="test")
    return {
        "a": float(acc.sel(lam=0.0)),
        "b": float(acc.sel(lam=1.0)),
        "units": "%",
        "source": "measured: the λ = 0 and λ = 1 points of this sweep on the test split",
    }


def _barriers(res: xr.Dataset) -> dict:
    """Every barrier by name with its one interval (the claims' image resamples) and its unit."""
    return {
        n: {"value": float(barrier(res, n)), "ci": _v(barrier_ci(res, n)), "units": barrier_units(n)}
        for n in BARRIER_NAMES
    }


def alignment_summary(res: xr.Dataset, claims: list[Claim]) -> dict:
    """One column of the side-by-side comparison: barriers with CIs, β at ½, k_ℓ, the alignment done."""
    mid = int(np.argmin(np.abs(res.lam.values - 0.5)))
    side = attr_meta(res, "sidecar_b")
    info = (side.alignment if side is not None else None) or {}
    out = {
        "alignment": {k: v for k, v in info.items() if k != "permutations"},
        "barriers": _barriers(res),
        "beta_mid": float(res.beta.isel(lam=mid)),
        "claims": claims_as_dicts(claims),
    }
    if "k_coord" in res:
        out["k_coord"] = {str(n): float(res.k_coord.sel(layer=n)) for n in res.layer.values}
        out["k_gram"] = {str(n): float(res.k_gram.sel(layer=n)) for n in res.layer.values}
    return out


def alignment_table(report: dict) -> str:
    """Columns side by side: no permutation against each alignment (barriers with CIs, β, k_ℓ, claims)."""
    cols = report.get("alignments", {})
    if len(cols) < 2:
        return ""
    head = ["", *cols]
    rows = [head]
    for name, label in (
        ("acc_mid", "acc barrier (pp)"),
        ("loss_mid_raw", "loss barrier raw (nats)"),
        ("loss_mid_cal", "loss barrier cal (nats)"),
    ):
        row = [label]
        for col in cols.values():
            b = col["barriers"][name]
            row.append(f"{_fmt(b['value'])} [{_fmt(b['ci'][0])}, {_fmt(b['ci'][1])}]")
        rows.append(row)
    rows.append(["β at λ = ½", *(_fmt(c["beta_mid"]) for c in cols.values())])
    first = next(iter(cols.values()))
    for key in ("k_coord", "k_gram"):
        for layer in first.get(key, {}):
            rows.append([f"{key} {layer}", *(_fmt(c.get(key, {}).get(layer), 2) for c in cols.values())])
    claim_ids = [c["id"] for c in report["claims"] if not compared_alignment(c["id"])]  # per alignment only
    for cid in claim_ids:
        row = [cid]
        for method, col in cols.items():
            found = {c["id"]: c for c in (report["claims"] if method == "none" else col["claims"])}.get(cid)
            row.append(f"{found['verdict']} {_fmt(found['value'])}" if found else "—")
        rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _k(k: dict) -> str:
    return f"{_fmt(k['value'], 2)} [{_fmt(k['ci'][0], 2)}, {_fmt(k['ci'][1], 2)}]"


def _fmt(x: float | None, digits: int = 3) -> str:
    return "n/a" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x:.{digits}f}"


def verdict_table(claims: list[dict], controls: dict | None = None) -> str:
    """Fixed-width verdict table: claim, verdict, value, CI, threshold, and each control's verdict and value."""
    controls = controls or {}
    head = ["claim", "verdict", "value", "95% CI", "threshold"]
    head += [f"{name} control" for name in controls]
    rows = [tuple(head)]
    by_control = {name: {c["id"]: c for c in ctl["claims"]} for name, ctl in controls.items()}
    for c in claims:
        op = "≤" if c["direction"] == "below" else ">"
        ci = c["ci"] if c["ci"] else [None, None]
        row = [c["id"], c["verdict"], _fmt(c["value"]), f"[{_fmt(ci[0])}, {_fmt(ci[1])}]", f"{op} {c['threshold']:g}"]
        for name in controls:
            other = by_control[name].get(c["id"])
            row.append(f"{other['verdict']} {_fmt(other['value'])}" if other else "—")
        rows.append(tuple(row))
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def interval_lines(claims: list[dict]) -> list[str]:
    """What the verdicts' intervals cover: one pair (images only) or n pairs (t-interval, and one new pair)."""
    ns = sorted({c.get("n_pairs", 1) for c in claims})
    if ns == [1]:
        return ["Intervals: 95%, over test images only — every verdict is conditional on this pair.", ""]
    lines = [f"Intervals: 95%, {claims[0].get('covers', '')}, n = {', '.join(map(str, ns))} pairs.", ""]
    for c in claims:
        lo, hi = c.get("prediction") or [None, None]
        lines.append(f"- {c['id']}: one new pair would fall in [{_fmt(lo)}, {_fmt(hi)}] (prediction interval)")
    return lines + [""]


def markdown(report: dict, figures: list[tuple[str, str]]) -> str:
    a, b = report["pair"]["a"], report["pair"]["b"]
    lams = report["lams"]
    label = report.get("width_label") or f"{a['model']} ×{a['width']}"
    lines = [
        f"# lewc report: {label} on {a['dataset']}, seeds {a['seed']} and {b['seed']}",
        "",
        f"Command: `{report['command']}`",
        "",
        f"λ convention: {report['lam_convention']}. Endpoint test accuracy (measured): "
        f"A {report['endpoint_test_acc']['a']:.2f} %, B {report['endpoint_test_acc']['b']:.2f} %. "
        f"Splits: {report['split_sizes']}. "
        f"BN re-estimated: {report['bn_reestimated']} ({report['bn_images']} images).",
        "",
        "## Verdicts",
        "",
        "```",
        verdict_table(report["claims"], report.get("controls")),
        "```",
        "",
        *interval_lines(report["claims"]),
        *paper_table(report.get("paper_statistics", {})),
        "",
    ]
    table = alignment_table(report)
    if table:
        lines += [
            "## Permutations side by side",
            "",
            "The same sweep, calibration, fits and claims for B as trained (none) and for B permuted towards A. "
            "lewc_weighting near 0 means LEWC-like splitting (t_ℓ ≈ 1); near 1 means LLFC-like (t_ℓ ≈ 0).",
            "",
            "```",
            table,
            "```",
            "",
        ]
    for name, ctl in report.get("controls", {}).items():
        lines.append(f"- {name} control: {ctl['note']}.")
    if not controls_done(report):
        lines.append(f"- controls: {report['controls_status']}.")
    for c in report["claims"]:
        spec = report["claim_specs"][c["id"]]
        lines.append(
            f"- **{c['id']}** ({c['verdict']}): {c['statement']}. Statistic: {spec['statistic']}; rival: "
            f"{spec['rival']}. Threshold: {c['reason']}." + (f" {c['note']}." if c["note"] else "")
        )
    lines += ["", "## Path", "", "| λ | acc (%) | loss (nats) | loss, cal (nats) | β |", "|---|---|---|---|---|"]
    m = report["metrics"]
    for i, lam in enumerate(lams):
        lines.append(
            f"| {lam:.2f} | {_fmt(m['acc'][i], 2)} | {_fmt(m['loss'][i], 4)} | {_fmt(m['loss_cal'][i], 4)} "
            f"| {_fmt(m['beta'][i], 3)} |"
        )
    lines += ["", "| barrier | value | 95% CI | units |", "|---|---|---|---|"]
    for name, bar in report["barriers"].items():
        ci = f"[{_fmt(bar['ci'][0], 4)}, {_fmt(bar['ci'][1], 4)}]"
        lines.append(f"| {name} | {_fmt(bar['value'], 4)} | {ci} | {bar['units']} |")
    if report["layers"]:
        lines += [
            "",
            "## Layers",
            "",
            "k_coord: WLS slope from the coordinate fits (interval from the fit); k_gram: slope from the Gram sums "
            "over all images, the k of lewc_weighting (interval: image bootstrap). See docs/conventions.md.",
            "",
            "| layer | ℓ | k_coord [95% CI] | k_gram [95% CI] | cos LEWC / LLFC at λ=0.3 "
            "| rel. err LEWC / LLFC at λ=0.3 | weak add. (pairing null) at ½ | RO B→A (null) |",
            "|---|---|---|---|---|---|---|---|",
        ]
        j3 = int(np.argmin(np.abs(np.array(lams) - 0.3)))
        j5 = int(np.argmin(np.abs(np.array(lams) - 0.5)))
        for L in report["layers"]:
            kc, kg = L["k_coord"], L["k_gram"]
            ro = L["reciprocal_orthogonality"]
            lines.append(
                f"| {L['name']} | {L['depth']} | {_k(kc)} | {_k(kg)} "
                f"| {_fmt(L['cos_lewc'][j3])} / {_fmt(L['cos_llfc'][j3])} "
                f"| {_fmt(L['rel_err_lewc'][j3])} / {_fmt(L['rel_err_llfc'][j3])} "
                f"| {_fmt(L['weak_additivity'][j5])} ({_fmt(L['weak_additivity_null'][j5])}) "
                f"| {_fmt(ro['b_on_a'])} ({_fmt(ro['b_on_a_null'])}) |"
            )
    lines += ["", "## Figures", ""]
    for stem, caption in figures:
        lines += [f"![{stem}]({stem}.png)", "", f"*{caption}*", ""]
    return "\n".join(lines) + "\n"


def dumps(report: dict) -> str:
    return json.dumps(report, indent=2, allow_nan=False) + "\n"
