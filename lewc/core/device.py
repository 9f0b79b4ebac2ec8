"""Device selection shared by every command."""

from __future__ import annotations

import torch

from lewc.core.errors import LewcError


def resolve_device(name: str | None) -> torch.device:
    """``None`` → CUDA when available, else CPU; a CUDA request on a machine without one is an error.

    ``torch.device`` rejects malformed names with a RuntimeError; that becomes a one-line error too.
    """
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise LewcError(f"unknown device {name!r}; use cpu, cuda or cuda:N") from None
    if dev.type not in ("cpu", "cuda"):
        raise LewcError(f"device {name!r} is not supported; use cpu, cuda or cuda:N")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise LewcError(f"device {name} requested but CUDA is not available here; use --device cpu")
    return dev
