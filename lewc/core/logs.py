"""Logging and the flags every command shares: ``-v/-q``, ``--threads``, ``--version``.

Status goes through :mod:`logging` as one plain line per event (an epoch, a λ-pass, a stage), so a
log redirected to a file (CI, a SLURM ``.out``) reads like the terminal without tqdm's carriage
returns; stdout stays for a command's real output (tables, paths). Every command calls
:func:`start` once, right after parsing; the library itself never configures logging.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import warnings
from collections.abc import Iterator

from lewc.core.errors import LewcError
from lewc.core.version import __version__

FORMAT = "%(asctime)s %(name)s %(levelname)s %(message)s"
DATEFMT = "%Y-%m-%d %H:%M:%S"
PACKAGES = ("lewc", "benchmarks")  # the loggers a command configures


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


ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # holds lewc/, experiments/
OWN_DIRS = tuple(os.path.join(ROOT, name) + os.sep for name in PACKAGES)


@contextlib.contextmanager
def quiet_warnings() -> Iterator[None]:
    """Python warnings raised inside become log lines, never raw text (with source lines) on stderr.

    A warning raised by lewc's own code is one ``WARNING`` line of the ``lewc`` logger (it means
    something for the result); a library's (numpy's "All-NaN slice", statsmodels' fit notes, torch's
    deprecations) is one ``DEBUG`` line, shown with ``-v``. Each distinct message is logged once.
    Every command runs inside it (``cli_main``), and so does ``lewc.verify_pair``.
    """
    seen: set[tuple[str, str]] = set()
    logger = logging.getLogger("lewc.warnings")

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        text = (str(message).strip().splitlines() or [""])[0][:500]
        if (category.__name__, text) in seen:
            return
        seen.add((category.__name__, text))
        if os.path.abspath(filename).startswith(OWN_DIRS):
            logger.warning("%s", text)
        else:
            logger.debug("library %s: %s (%s:%d)", category.__name__, text, os.path.basename(filename), lineno)

    with warnings.catch_warnings():
        warnings.simplefilter("default")
        warnings.showwarning = show
        yield
