"""lewc: verify permutation-free linear mode connectivity and LEWC of wide networks.

Reference: Ito, Yamada, Chijiwa, Kumagai, "Do We Really Need Permutations? Impact of Width
Expansion on Linear Mode Connectivity", arXiv 2510.08023 (ICLR 2026).

The Python API (docs/api.md): ``lewc.verify_pair(model_a, model_b, train=..., test=...)`` returns a
``lewc.PairReport``; bad input raises ``lewc.LewcError`` (a ``ValueError``). ``import lewc`` stays cheap:
the pipeline (torch, xarray, scipy) is imported on first use of these names.
"""

from lewc.core.errors import LewcError, quiet_startup_interrupts
from lewc.core.version import __version__

__all__ = ["ClaimResult", "LewcError", "PairReport", "__version__", "verify_pair"]

_LAZY = {"verify_pair", "PairReport", "ClaimResult"}


def __getattr__(name: str):
    if name in _LAZY:
        from lewc.pipeline import api

        return getattr(api, name)
    raise AttributeError(f"module 'lewc' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | _LAZY)


quiet_startup_interrupts()  # only when run as ``python -m lewc...``: Ctrl-C during imports is one line
