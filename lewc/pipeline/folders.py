"""Where an analysis goes: the options that name its folder, and publishing that folder atomically.

A results folder is built privately under ``.lewc-tmp-<name>-*`` and made visible with one rename, so a
reader sees either the old complete folder or the new one, never a half-written one.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from lewc.core.errors import LewcError
from lewc.core.interrupts import deferred_interrupts
from lewc.core.io import TMP_PREFIX as TMP_PREFIX  # re-exported: the temporaries' naming lives in lewc.core.io
from lewc.core.io import clean_stale, data_home, remove_entry, tmp_prefix
from lewc.core.io import owner_tag as owner_tag
from lewc.core.validate import check_path, check_plain_name
from lewc.reporting.results import RESULTS_SCHEMA, json_attr
from lewc.training.checkpoints import CheckpointMeta
from lewc.training.recipe import units_slug

LOCK_NAME = ".publish.lock"  # only where directory locks are unsupported (readers skip dot files)


@dataclass(frozen=True)
class AnalysisOptions:
    """Every option that changes a result; its hash names the results folder.

    ``device`` is the device type the analysis ran on: kernels differ in float rounding between devices.
    It enters the hash only when it is not the CPU, so the CPU folders keep their names. The compute
    batch (``--batch-size-eval``) is not here: it changes no number (docs/conventions.md).
    """

    lams: tuple[float, ...]
    n_test: int | None
    bn_images: int
    controls: bool
    align: tuple[str, ...] = ("none",)
    device: str = "cpu"

    def key(self) -> str:
        fields = dict(self.__dict__)
        if fields.get("device") == "cpu":
            del fields["device"]
        blob = json.dumps({"schema": RESULTS_SCHEMA, **fields}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:8]

    def on(self, device) -> AnalysisOptions:
        """These options as run on ``device`` (a ``torch.device`` or its name): its type names the folder."""
        import dataclasses

        kind = device.type if hasattr(device, "type") else str(device).split(":")[0]
        return dataclasses.replace(self, device=kind)


def content_key(meta_a: CheckpointMeta, meta_b: CheckpointMeta, data_id: str) -> str:
    """What an analysis reads, by content: both weights' sha256 (short) and the dataset's identity."""
    return f"{meta_a.sha256[:8]}-{meta_b.sha256[:8]}_d{data_id[:8]}"


def run_provenance(
    command: str, options: AnalysisOptions, device, seeds: list, files: dict | None = None, **extra
) -> dict:
    """What every analysis records in attrs: command, checkpoint files, time, seeds, device, threads, options."""
    import torch

    return {
        "command": command,
        **(files or {}),
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "seeds": seeds,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "analysis_options": json_attr(options.__dict__),
        "analysis_key": options.key(),
        **extra,
    }


def pair_name(meta_a: CheckpointMeta, meta_b: CheckpointMeta, data_id: str) -> str:
    """``<dataset>_<model>_w<width>-<units>_<recipe>_s<A>-<B>_<recipe hash>_<content key>``, a plain name.

    The readable part says what the pair is (the width in units, the training preset); the weights'
    hashes and the dataset's identity are part of the name, so a replaced checkpoint or dataset file
    can never reuse an analysis of other content.
    """
    config = meta_a.config
    if config is not None:
        suffix, recipe = config.hash_without_seed(), config.recipe
    else:
        suffix, recipe = "norecipe", "external"
    units = units_slug(meta_a.model, int(meta_a.width), meta_a.base_width, meta_a.depth)
    readable = f"{meta_a.dataset}_{meta_a.model}_w{meta_a.width}-{units}_{recipe}"
    readable += f"_s{meta_a.seed}-{meta_b.seed}"
    return check_plain_name(f"{readable}_{suffix}_{content_key(meta_a, meta_b, data_id)}", "results folder name")


def results_folder(
    meta_a: CheckpointMeta, meta_b: CheckpointMeta, options: AnalysisOptions, data_id: str, label: str | None = None
) -> Path:
    """The one place a pair's results folder is named: ``<pair>_a<analysis hash>`` under data/results/.

    ``label``: the readable part for endpoints lewc did not train (``<dataset>_<arch>``), whose name
    is then that label and the content key (no recipe to spell)."""
    pair = pair_name(meta_a, meta_b, data_id) if label is None else f"{label}_{content_key(meta_a, meta_b, data_id)}"
    return data_home() / "results" / f"{pair}_a{options.key()}"


def sweep_folder(dataset: str, model: str, widths: list[int], seeds: list[int], options: AnalysisOptions) -> Path:
    """The folder of several pairs and widths combined (a width sweep's ``study.nc``); long lists are hashed."""
    name = f"{dataset}_{model}_sweep_w{'-'.join(map(str, widths))}_s{'-'.join(map(str, seeds))}_a{options.key()}"
    if len(name) > 200:
        digest = hashlib.sha256(f"{widths}/{seeds}".encode()).hexdigest()[:12]
        name = f"{dataset}_{model}_sweep_{len(widths)}w-{len(seeds)}s-{digest}_a{options.key()}"
    return data_home() / "results" / check_plain_name(name, "sweep folder name")


def check_out(folder: str | os.PathLike) -> Path:
    """The folder an output really goes to: a printable path (``check_path``); through a symbolic link,
    the link's target (which must be an existing folder), so publishing replaces the target's content
    and leaves the user's link in place, pointing at the new folder."""
    path = Path(check_path(folder, "output folder"))
    if path.is_symlink():
        target = Path(os.path.realpath(path))
        if not target.exists():
            raise LewcError(f"output folder {path} is a symbolic link to {target}, which does not exist")
        if not target.is_dir():
            raise LewcError(f"output folder {path} is a symbolic link to {target}, which is not a folder")
        check_path(target, "output folder (link target)")
        return target
    return path


def check_writable(folder: Path) -> None:
    """Fail before any work if ``folder`` cannot be created or written (or is not a printable path)."""
    folder = check_out(folder)
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
    serialised by a lock, and the last to finish wins. The lock is ``flock`` on the parent folder itself,
    so no lock file is ever left beside the output (``filelock``'s file in the parent, the fallback
    where directory locks are not supported). ``final`` through a symbolic link is its target
    (``check_out``): the link is never replaced by a folder.

    The two renames are one step for Ctrl-C and SIGTERM (delivered after both); if the second fails, the
    old folder is put back. The old folder waits under a ``.lewc-tmp-old-*`` name only until it is
    removed, on every exit path.
    """
    final = check_out(final)
    for path in [tmp, *tmp.iterdir()]:
        os.chmod(path, 0o755 if path.is_dir() else 0o644)
    with folder_lock(final.parent):
        old, swapped = None, False
        try:
            with deferred_interrupts():
                if final.exists() or final.is_symlink():
                    old = Path(tempfile.mkdtemp(prefix=tmp_prefix(f"old-{final.name}"), dir=final.parent))
                    os.rmdir(old)
                    os.replace(final, old)
                try:
                    os.replace(tmp, final)
                except BaseException:
                    if old is not None:
                        os.replace(old, final)  # the previous folder back: a failed publish changes nothing
                    raise
                swapped = True
        finally:
            if swapped and old is not None:
                remove_entry(old)


@contextlib.contextmanager
def folder_lock(parent: Path) -> Iterator[None]:
    """An exclusive lock on ``parent`` (a folder) that creates no file: ``flock`` on the folder's descriptor."""
    try:
        import fcntl

        fd = os.open(parent, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except (ImportError, OSError):
        fd = None
    if fd is not None:
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
            except OSError:  # a filesystem without directory locks (some NFS): the lock file below
                pass
            else:
                try:
                    yield
                finally:
                    fcntl.flock(fd, fcntl.LOCK_UN)
                return
        finally:
            os.close(fd)
    from filelock import FileLock

    with FileLock(parent / LOCK_NAME):
        yield


def private_folder(out_dir: Path) -> Path:
    """A fresh ``.lewc-tmp-<name>-pid<N>@<host>-*`` folder beside ``out_dir`` to build it in (debris of killed
    runs goes first)."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    clean_stale(out_dir.parent)
    return Path(tempfile.mkdtemp(prefix=tmp_prefix(out_dir.name), dir=out_dir.parent))
