"""Logging and the flags every command shares: ``-v/-q``, ``--threads``, ``--version``.

Status goes through :mod:`logging` as one plain line per event (an epoch, a λ-pass, a stage), so a
log redirected to a file (CI, a SLURM ``.out``) reads like the terminal without tqdm's carriage
returns; stdout stays for a command's real output (tables, paths). Every command calls
:func:`start` once, right after parsing; the library itself never configures logging.
"""

from __future__ import annotations

import argparse
import logging
import sys

from lewc.core.errors import LewcError
from lewc.core.version import __version__
from lewc.core.warnlog import PACKAGES as PACKAGES  # re-exported: the loggers a command configures
from lewc.core.warnlog import quiet_warnings as quiet_warnings  # re-exported: lewc.pipeline.api, tests

FORMAT = "%(asctime)s %(name)s %(levelname)s %(message)s"
DATEFMT = "%Y-%m-%d %H:%M:%S"


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at emit time (pytest's capture and redirections swap it)."""

    def __init__(self) -> None:
        super().__init__()

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:  # StreamHandler.__init__ assigns it; the property wins
        pass


def level_for(verbosity: int) -> int:
    """-1 (``-q``): warnings and errors; 0: INFO (the default); ≥ 1 (``-v``): DEBUG."""
    return logging.WARNING if verbosity < 0 else logging.INFO if verbosity == 0 else logging.DEBUG


def setup_logging(verbosity: int = 0) -> None:
    """One stderr handler on the project's loggers at the level of ``verbosity`` (idempotent).

    Only the project's loggers are configured (not the root), so third-party libraries keep their
    own defaults; records still propagate, so pytest's ``caplog`` sees them.
    """
    for name in PACKAGES:
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):
            if isinstance(handler, _StderrHandler):
                logger.removeHandler(handler)
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter(FORMAT, DATEFMT))
        logger.addHandler(handler)
        logger.setLevel(level_for(verbosity))


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """``-v/--verbose``, ``-q/--quiet``, ``--threads N`` and ``--version``: the same on every command."""
    g = parser.add_argument_group("output and threads (every lewc command)")
    g.add_argument("-v", "--verbose", action="count", default=0, help="more log lines (debug)")
    g.add_argument(
        "-q", "--quiet", action="store_true", help="log warnings and errors only, no progress bars (stdout unchanged)"
    )
    g.add_argument(
        "--threads",
        type=int,
        help="CPU threads of torch (torch.set_num_threads); recorded with the results, since bit-identical "
        "CPU results need the same count (default: torch's)",
    )
    g.add_argument("--version", action="version", version=f"%(prog)s (lewc {__version__})")


def verbosity(args: argparse.Namespace) -> int:
    return -1 if getattr(args, "quiet", False) else int(getattr(args, "verbose", 0))


def start(args: argparse.Namespace) -> None:
    """Apply the common flags: logging level, then the thread count (checked: a bad count is one line)."""
    setup_logging(verbosity(args))
    threads = getattr(args, "threads", None)
    if threads is not None:
        if threads < 1:
            raise LewcError(f"--threads must be a positive integer, got {threads}")
        import torch

        torch.set_num_threads(threads)
