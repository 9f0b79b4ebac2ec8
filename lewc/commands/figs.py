"""``python -m lewc.commands.figs``: every figure from stored ``results.nc`` / ``study.nc`` files, never a model.

It scans ``--results`` (default ``data/results``) for per-pair ``results.nc`` files and for the
``study.nc`` of width sweeps (``verify --widths``), and ``data/studies`` for the studies' ``study.nc``,
groups pairs by (dataset, model), and writes PNG + PDF figures and an
``index.md`` with each figure's caption and the command that produced its data into ``--out``
(default ``data/figures``).
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
from collections import defaultdict
from pathlib import Path

from lewc.core import logs
from lewc.core.errors import LewcError, OneLineArgumentParser, cli_main
from lewc.core.io import data_home, reading
from lewc.pipeline.folders import check_writable, private_folder
from lewc.reporting import plots
from lewc.reporting.results import RESULTS_SCHEMA, STUDY_SCHEMA, attr_meta, open_results
from lewc.reporting.study_plots import study_figures

log = logging.getLogger("lewc.commands.figs")  # not __name__: that is "__main__" under python -m


def _published(path: Path, root: Path) -> bool:
    """Only files of complete runs: never inside a ``.lewc-tmp-*`` folder a killed run left behind."""
    return not any(part.startswith(".") for part in path.relative_to(root).parts)


def collect_results(results_dir: Path, name: str = "results.nc") -> list[Path]:
    """Published ``results.nc`` (or ``study.nc``) files under ``results_dir``, sorted."""
    return sorted(p for p in results_dir.rglob(name) if _published(p, results_dir))


def group_pairs(files: list[Path]) -> dict[tuple[str, str], list]:
    groups = defaultdict(list)
    for f in files:
        res = load_file(f, RESULTS_SCHEMA)  # all alignments: each figure picks the ones it draws
        if "sidecar_a" not in res.attrs:
            raise LewcError(f"{f} has no sidecar_a attribute; rerun python -m lewc.verify")
        with reading(f, "results file"):
            meta = attr_meta(res, "sidecar_a", ("dataset", "model", "width"))
            key = (str(meta.dataset), str(meta.model))
            int(meta.width)
        groups[key].append(res)
    return groups


def load_file(path: Path, schema: str):
    """A stored results/sweep/study file read whole (a truncated one fails here, not in a figure)."""
    with reading(path, "results file"):
        ds = open_results(path, schema).load()
    ds.encoding["source"] = str(path)
    return ds


def sources_of(datasets: list) -> str:
    return ", ".join(sorted({str(d.encoding.get("source", "?")) for d in datasets}))


def make_figures(results_dir: Path, out_dir: Path) -> list[dict]:
    """Every figure, drawn into a private folder beside ``out_dir`` and moved in only when all are drawn:
    a file no figure can be drawn from is one line naming it, and nothing is written."""
    check_writable(out_dir)
    try:
        stage = private_folder(out_dir)
    except OSError as err:
        raise LewcError(f"cannot create {out_dir} ({err.strerror})") from None
    try:
        made = draw_figures(results_dir, stage)
        out_dir.mkdir(parents=True, exist_ok=True)  # only once every figure is drawn
        for path in sorted(stage.iterdir()):
            os.replace(path, out_dir / path.name)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return made


def draw_figures(results_dir: Path, out_dir: Path) -> list[dict]:
    pair_files = collect_results(results_dir)
    study_files = collect_results(results_dir, "study.nc")  # width sweeps (verify --widths)
    study_files += collect_results(results_dir.parent / "studies", "study.nc")  # lewc study
    if not pair_files and not study_files:
        raise LewcError(f"no results.nc or study.nc under {results_dir}; run python -m lewc.verify first")
    pair_groups = group_pairs(pair_files)  # refuses foreign files before anything is written
    studies = [(f, load_file(f, STUDY_SCHEMA)) for f in study_files]
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise LewcError(f"cannot create {out_dir} ({err.strerror})") from None
    made = []

    def emit(stem: str, draw, data, sources: list) -> None:
        with reading(sources_of(sources), f"figure {stem}: results file(s)"):
            fig, caption = draw(data)
            plots.save(fig, out_dir / stem, ("png", "pdf"))
        commands = sorted({s.attrs.get("command", "?") for s in sources})
        made.append({"figure": stem, "caption": caption, "commands": commands})

    for (dataset, model), results in sorted(pair_groups.items()):
        tag = f"{dataset}_{model}"
        widest = max(results, key=lambda r: int(attr_meta(r, "sidecar_a", ("width",)).width))
        emit(f"{tag}_path", plots.path, widest, [widest])
        emit(f"{tag}_accuracy_loss_vs_lambda", plots.accuracy_loss_vs_lambda, results, results)
        emit(f"{tag}_beta_vs_lambda", plots.beta_vs_lambda, results, results)
        emit(f"{tag}_ensemble_agreement", plots.ensemble_agreement, results, results)
        if "cos_lewc" in widest:
            emit(f"{tag}_cosine_per_layer", plots.cosine_per_layer, widest, [widest])
            emit(f"{tag}_coefficients", plots.coefficients, widest, [widest])
            emit(f"{tag}_exponent_vs_depth", plots.exponent_vs_depth, results, results)
            emit(f"{tag}_conditions_vs_width", plots.conditions_vs_width, results, results)
    for f, study in studies:
        with reading(f, "study file"):
            drawn = study_figures(study, out_dir, f"study_{f.parent.name}", ("png", "pdf"))
        for stem, caption in drawn:
            made.append({"figure": stem, "caption": caption, "commands": [study.attrs.get("command", "?")]})
    lines = [
        "# lewc figures",
        "",
        f"Regenerated by `python -m lewc.commands.figs --results {results_dir}` from stored results.",
        "",
    ]
    for m in made:
        lines += [
            f"## {m['figure']}",
            "",
            f"![{m['figure']}]({m['figure']}.png)",
            "",
            m["caption"],
            "",
            "Data produced by: " + "; ".join(f"`{c}`" for c in m["commands"]),
            "",
        ]
    (out_dir / "index.md").write_text("\n".join(lines))
    return made


@cli_main
def main(argv: list[str] | None = None) -> None:
    p = OneLineArgumentParser(
        prog="python -m lewc.commands.figs", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--results", type=Path, default=None, help="folder scanned for results (default data/results)")
    p.add_argument("--out", type=Path, default=None, help="figure folder (default data/figures)")
    logs.add_common_arguments(p)
    args = p.parse_args(argv)
    logs.start(args)
    results_dir = args.results or data_home() / "results"
    out_dir = args.out or data_home() / "figures"
    if out_dir.exists() and not out_dir.is_dir():
        raise LewcError(f"--out {out_dir} is a file")
    made = make_figures(results_dir, out_dir)
    log.info("%d figures written to %s", len(made), out_dir)
    print(out_dir / "index.md")


if __name__ == "__main__":
    main()
