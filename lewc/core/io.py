"""Where lewc's files live (``data_home``) and atomic file writing: a temporary file in the same folder,
fsync, then rename.

An interrupted run therefore leaves either the previous complete file or nothing, never a
truncated one (docs/conventions.md).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from lewc.core.errors import LewcError


def data_home() -> Path:
    """Root of datasets, checkpoints, results, studies and caches: ``$LEWC_DATA`` or ``./data``."""
    return Path(os.environ.get("LEWC_DATA", "data"))


def _default_file_mode() -> int:
    """The mode ``open()`` would give a new file (0o666 less the umask); mkstemp's is always 0o600."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``final``; on success rename it onto ``final``."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
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


def _first_line(err: BaseException) -> str:
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
        raise LewcError(f"{what} {path} cannot be read ({type(err).__name__}: {_first_line(err)})") from None


def read_json(path: str | os.PathLike, what: str = "file", max_bytes: int = 64 << 20) -> object:
    """JSON from ``path``, or one ``LewcError`` line naming it (missing, too large, not UTF-8, not JSON)."""
    path = Path(path)
    if not path.is_file():
        raise LewcError(f"{what} {path} does not exist")
    if path.stat().st_size > max_bytes:
        raise LewcError(f"{what} {path} is {path.stat().st_size} bytes; at most {max_bytes} expected")
    with reading(path, what):
        return json.loads(path.read_text(encoding="utf-8"))
