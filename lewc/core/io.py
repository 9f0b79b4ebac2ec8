"""Where lewc's files live (``data_home``) and atomic file writing: a temporary file in the same folder,
fsync, then rename.

An interrupted run therefore leaves either the previous complete file or nothing, never a
truncated one (docs/conventions.md).

Every temporary lewc makes beside a file or folder it publishes (``atomic_path``'s files, the
private folders of ``lewc.pipeline.folders``) is named ``.lewc-tmp-<name>-pid<N>@<host>-<random>``:
hidden, plainly lewc's, and naming its owner. It is removed on every exit path the process lives
through (success, an exception, Ctrl-C); what a SIGKILL leaves is removed by the next lewc run that
writes into the same folder (``clean_stale``) once its owner has ended — never while it runs.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import os
import re
import shutil
import socket
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from lewc.core.errors import LewcError


def data_home() -> Path:
    """Root of datasets, checkpoints, results, studies and caches: ``$LEWC_DATA`` or ``./data``."""
    return Path(os.environ.get("LEWC_DATA", "data"))


TMP_PREFIX = ".lewc-tmp-"
LEGACY_TMP_PREFIX = ".tmp-"  # earlier versions' private folders: swept only when their owner is known to be gone
OWNER = re.compile(r"-pid(?P<pid>[0-9]+)@(?P<host>.+)-[a-z0-9_]+$")
STALE_SECONDS = 86400  # temporaries whose owner cannot be checked (another host, no owner in the name) go after a day
NAME_CHARS = 80  # of the published name kept in a temporary's name (the whole stays within NAME_MAX)


def owner_tag() -> str:
    """``pid<N>@<host>``: which process owns a temporary, so later runs know when it is debris."""
    return f"pid{os.getpid()}@{socket.gethostname()}"


def tmp_prefix(name: str) -> str:
    """``.lewc-tmp-<name>-pid<N>@<host>-`` (``tempfile`` appends the random part)."""
    return f"{TMP_PREFIX}{name[:NAME_CHARS]}-{owner_tag()}-"


def remove_entry(path: Path) -> None:
    """Remove a folder tree, a file or a symbolic link (never following the link)."""
    if path.is_symlink() or not path.is_dir():
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    else:
        shutil.rmtree(path, ignore_errors=True)


def _owner_gone(name: str) -> bool | None:
    """True if the temporary's owning process (on this host) has ended, False if it runs, None if unknown."""
    match = OWNER.search(name)
    if match is None or match["host"] != socket.gethostname():
        return None
    try:
        os.kill(int(match["pid"]), 0)
    except ProcessLookupError:
        return True
    except (PermissionError, OverflowError):
        return False
    return False


def clean_stale(parent: str | os.PathLike) -> None:
    """Remove the leftovers of killed lewc runs in ``parent`` (temporary folders, files or links; a link is
    removed, never followed): at once when their owning process on this host has ended, after a day when
    the owner cannot be checked (another host sharing the folder). A live owner's temporary is never
    touched. Earlier versions' ``.tmp-*`` names are removed only when they name an owner that has ended."""
    parent = Path(parent)
    if not parent.is_dir():
        return
    now = _dt.datetime.now().timestamp()
    try:
        entries = [p for p in parent.iterdir() if p.name.startswith((TMP_PREFIX, LEGACY_TMP_PREFIX))]
    except OSError:
        return
    for path in entries:
        try:
            gone = _owner_gone(path.name)
            if path.name.startswith(LEGACY_TMP_PREFIX):
                stale = gone is True
            else:
                stale = gone or (gone is None and now - path.lstat().st_mtime > STALE_SECONDS)
            if stale:
                remove_entry(path)
        except OSError:
            continue


def _default_file_mode() -> int:
    """The mode ``open()`` would give a new file (0o666 less the umask); mkstemp's is always 0o600."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``final`` (``.lewc-tmp-<name>-pid<N>@<host>-*``, removed on every exit
    path; a killed run's is removed by the next write into the folder); on success rename it onto ``final``."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    clean_stale(final.parent)
    fd, tmp = tempfile.mkstemp(prefix=tmp_prefix(final.name), dir=final.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp_path, _default_file_mode())
        os.replace(tmp_path, final)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_atomic(final: str | os.PathLike, writer: Callable[[Path], None]) -> None:
    """Call ``writer(tmp_path)`` and atomically move the result to ``final``."""
    with atomic_path(final) as tmp:
        writer(tmp)


def write_json_atomic(final: str | os.PathLike, obj: object) -> None:
    """Write ``obj`` as indented JSON atomically."""
    write_atomic(final, lambda p: p.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n"))


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes, streamed."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


READ_ERRORS = (OSError, ValueError, KeyError, IndexError, TypeError, AttributeError, RuntimeError, UnicodeError)


def first_line(err: BaseException) -> str:
    """An exception's message for a one-line error: its first line, at most 300 characters."""
    lines = str(err).strip().splitlines()
    return lines[0][:300] if lines else "no message"


@contextlib.contextmanager
def reading(path: str | os.PathLike, what: str = "file") -> Iterator[None]:
    """Whatever goes wrong while reading and interpreting ``path`` (empty, random, truncated, incomplete or
    foreign content) becomes one ``LewcError`` line naming the file; lewc's own errors pass unchanged."""
    try:
        yield
    except LewcError:
        raise
    except READ_ERRORS as err:
        raise LewcError(f"{what} {path} cannot be read ({type(err).__name__}: {first_line(err)})") from None


def read_json(path: str | os.PathLike, what: str = "file", max_bytes: int = 64 << 20) -> object:
    """JSON from ``path``, or one ``LewcError`` line naming it (missing, too large, not UTF-8, not JSON)."""
    path = Path(path)
    if not path.is_file():
        raise LewcError(f"{what} {path} does not exist")
    if path.stat().st_size > max_bytes:
        raise LewcError(f"{what} {path} is {path.stat().st_size} bytes; at most {max_bytes} expected")
    with reading(path, what):
        return json.loads(path.read_text(encoding="utf-8"))
