"""Where an analysis goes: the options that name its folder, and publishing that folder atomically.

A results folder is built privately under ``.tmp-<name>-*`` and made visible with one rename, so a
reader sees either the old complete folder or the new one, never a half-written one.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from lewc.core.errors import LewcError
from lewc.reporting.results import RESULTS_SCHEMA
from lewc.training.data import data_home
from lewc.training.recipe import TrainConfig, units_slug

TMP_PREFIX = ".tmp-"
LOCK_NAME = ".publish.lock"  # one per parent folder (readers skip dot files)


@dataclass(frozen=True)
class AnalysisOptions:
    """Every option that changes a result; its hash names the results folder."""

    lams: tuple[float, ...]
    n_test: int | None
    bn_images: int
    controls: bool
    align: tuple[str, ...] = ("none",)

    def key(self) -> str:
        blob = json.dumps({"schema": RESULTS_SCHEMA, **self.__dict__}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:8]


def pair_name(meta_a: dict, meta_b: dict) -> str:
    """``<dataset>_<model>_w<width>-<units>_<recipe>_s<seed A>-<seed B>_<recipe hash>``."""
    cfg = meta_a.get("train_config")
    if isinstance(cfg, dict):
        config = TrainConfig.from_dict(cfg)
        suffix, recipe = config.hash_without_seed(), config.recipe
    else:
        suffix, recipe = meta_a["sha256"][:8], "external"
    units = units_slug(meta_a["model"], int(meta_a["width"]), meta_a.get("base_width"), meta_a.get("depth"))
    return (
        f"{meta_a['dataset']}_{meta_a['model']}_w{meta_a['width']}-{units}_{recipe}"
        f"_s{meta_a['seed']}-{meta_b['seed']}_{suffix}"
    )


def results_folder(meta_a: dict, meta_b: dict, options: AnalysisOptions) -> Path:
    return data_home() / "results" / f"{pair_name(meta_a, meta_b)}_a{options.key()}"


def check_writable(folder: Path) -> None:
    """Fail before any work if ``folder`` cannot be created or written."""
    probe = Path(folder)
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise LewcError(f"output folder {folder} cannot be created: {probe} is a file")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise LewcError(f"output folder {folder} is not writable ({probe} is read-only)")
    if Path(folder).exists() and not Path(folder).is_dir():
        raise LewcError(f"output folder {folder} is a file")


def publish(tmp: Path, final: Path) -> None:
    """Make the finished folder ``tmp`` visible as ``final`` by renames (the old one, if any, goes).

    Readers see either the old complete folder or the new one; concurrent runs into one folder are
    serialised by a ``filelock`` lock, and the last to finish wins. The lock is one file per parent
    folder (``.publish.lock``), not one per results folder: filelock keeps the file after release on
    purpose (unlinking a lock file that another process is waiting on lets two holders in at once), so
    one shared file is the least litter. Holding it across folders costs nothing: a publish is two renames.
    """
    from filelock import FileLock

    for path in [tmp, *tmp.iterdir()]:
        os.chmod(path, 0o755 if path.is_dir() else 0o644)
    with FileLock(final.parent / LOCK_NAME):
        old = None
        if final.exists():
            old = final.with_name(f"{TMP_PREFIX}old-{final.name}-{os.getpid()}")
            os.replace(final, old)
        os.replace(tmp, final)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def clean_stale(parent: Path) -> None:
    """Remove leftovers of killed runs (``.tmp-*`` folders) older than a day; readers ignore the rest."""
    if not parent.is_dir():
        return
    now = _dt.datetime.now().timestamp()
    for path in parent.glob(f"{TMP_PREFIX}*"):
        if path.is_dir() and now - path.stat().st_mtime > 86400:
            shutil.rmtree(path, ignore_errors=True)


def private_folder(out_dir: Path) -> Path:
    """A fresh ``.tmp-`` folder beside ``out_dir`` to build it in (stale ones of killed runs go first)."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    clean_stale(out_dir.parent)
    return Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{out_dir.name}-", dir=out_dir.parent))
