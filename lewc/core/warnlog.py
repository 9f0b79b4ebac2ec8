"""Python warnings as log lines: the filter every command runs inside (``cli_main``), and ``lewc.verify_pair``.

Its own module, importing nothing of lewc, so that both ``lewc.core.errors`` (whose ``cli_main`` runs a
command inside it) and ``lewc.core.logs`` (which raises ``LewcError``) import it at their top without a
cycle between them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from collections.abc import Iterator

PACKAGES = ("lewc", "benchmarks")  # the project's own code: its loggers, and the files its warnings come from
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
