"""Checks of untrusted values (sidecars, specs, flags) by type and range, each failing in one line.

A value that becomes part of a path must be a *plain name* (``check_plain_name``): no separator, no
``..``, nothing hidden, nothing a shell or a filesystem treats specially. Numbers are checked against
explicit bounds here, so a width of 10**30 is a one-line error instead of an overflow deep in torch.
"""

from __future__ import annotations

import math
import os
import re
import unicodedata
from typing import Any

from lewc.core.errors import LewcError

PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+=-]{0,199}")


def check_plain_name(value: Any, what: str) -> str:
    """``value`` if it is a string usable as one path component (letters, digits, ``. _ + = -``)."""
    if not isinstance(value, str) or not PLAIN_NAME.fullmatch(value) or ".." in value:
        raise LewcError(
            f"{what} must be a plain name (letters, digits, '._+=-', at most 200, not starting with a dot), "
            f"got {short(value, 60)}"
        )
    return value


def check_int(value: Any, what: str, lo: int, hi: int) -> int:
    """``value`` if it is an int (not a bool) in ``[lo, hi]``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise LewcError(f"{what} must be an integer, got {type(value).__name__} {short(value)}")
    if not lo <= value <= hi:
        raise LewcError(f"{what} must be in [{lo}, {hi}], got {short(value)}")
    return value


def check_number(value: Any, what: str, lo: float, hi: float) -> float:
    """``value`` as a float if it is a finite real number (not a bool) in ``[lo, hi]``."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise LewcError(f"{what} must be a number, got {type(value).__name__} {short(value)}")
    if isinstance(value, int) and abs(value) > 10**300:
        raise LewcError(f"{what} must be in [{lo:g}, {hi:g}], got {short(value)}")
    if not math.isfinite(value) or not lo <= value <= hi:
        raise LewcError(f"{what} must be in [{lo:g}, {hi:g}], got {short(value)}")
    return float(value)


def check_bool(value: Any, what: str) -> bool:
    """``value`` if it is a boolean (``"no"``, 0 or ``"false"`` are refused, not guessed)."""
    if not isinstance(value, bool):
        raise LewcError(f"{what} must be true or false, got {type(value).__name__} {short(value)}")
    return value


def check_str(value: Any, what: str, max_len: int = 10_000) -> str:
    if not isinstance(value, str) or len(value) > max_len:
        raise LewcError(f"{what} must be a string of at most {max_len} characters, got {type(value).__name__}")
    return value


def short(value: Any, limit: int = 40) -> str:
    """A value for a message, cut so that a 5,001-digit integer stays one readable line."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10**limit:
        return f"an integer of {len(str(abs(value))) if abs(value) < 10**4000 else 'over 4000'} digits"
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


BIDI_CONTROLS = set("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f")


def check_path(value: str | os.PathLike, what: str) -> str:
    """``value`` as a string if it is a printable path: no control character (a newline would break the
    report path a command prints last), no line or paragraph separator, no bidirectional override, no
    undecodable byte, no NUL; one line naming the first offending character otherwise."""
    text = os.fspath(value)
    if isinstance(text, bytes):
        raise LewcError(f"{what} must be a text path, got bytes")
    if not text:
        raise LewcError(f"{what} is an empty path")
    for i, ch in enumerate(text):
        cat = unicodedata.category(ch)
        if cat in ("Cc", "Zl", "Zp", "Cs") or ch in BIDI_CONTROLS:
            raise LewcError(
                f"{what} {ascii(short(text, 80))} contains the control character {ascii(ch)} at position {i}; "
                "give a printable path"
            )
    return text
