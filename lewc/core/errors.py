"""One exception type for bad input, and a guard that turns it into one line and exit code 2.

Commands must never show a traceback for a user mistake (a missing dataset, a corrupt
checkpoint, λ outside [0, 1]); internal errors exit 1 and keep their traceback behind
``LEWC_DEBUG=1`` so bugs remain debuggable.
"""

from __future__ import annotations

import argparse
import errno
import functools
import os
import signal
import sys
from collections.abc import Callable
from typing import NoReturn, TypeVar

from lewc.core.warnlog import quiet_warnings

F = TypeVar("F", bound=Callable[..., object])


class LewcError(ValueError):
    """A problem with the user's input or environment, reported as one line (exit code 2).

    A ``ValueError``, so library callers catch it like any bad argument.
    """


class OneLineArgumentParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr and exit code 2."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"{self.prog}: error: {message} (see --help)\n")
        sys.exit(2)


INTERRUPTED = "interrupted: finished files are kept, rerun the same command to resume\n"


def _exit_on_interrupt(signum: int, frame: object) -> None:
    sys.stderr.write(INTERRUPTED)
    os._exit(130)


def quiet_startup_interrupts() -> None:
    """Make Ctrl-C during a command's imports (torch alone takes seconds) one line, not a traceback.

    Installed by the packages' ``__init__`` only when Python runs a module as a program
    (``python -m lewc.verify``: ``sys.argv[0]`` is ``"-m"`` while the module is located), so
    importing lewc as a library never touches signal handlers. ``cli_main`` puts Python's own
    handler back once the command runs, from where interruption is handled as ``KeyboardInterrupt``.
    """
    if sys.argv[:1] == ["-m"] and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, _exit_on_interrupt)


OUT_OF_MEMORY = (
    "error: the device ran out of memory; nothing was published. Rerun with a smaller --batch-size-eval "
    "(the default is 500), with --no-controls (the positive control is the largest network), or on a "
    "device with more memory\n"
)


def cli_main(func: F) -> F:
    """Wrap a command's ``main``: LewcError → one line + exit 2, other errors → exit 1."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        if hasattr(signal, "SIGXFSZ"):  # a file-size limit becomes an OSError (EFBIG) instead of a kill
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        if signal.getsignal(signal.SIGINT) is _exit_on_interrupt:
            signal.signal(signal.SIGINT, signal.default_int_handler)
        try:
            with quiet_warnings():  # library warnings: DEBUG lines, never raw text on stderr (-q is quiet)
                return func(*args, **kwargs)
        except LewcError as err:
            sys.stderr.write(f"error: {err}\n")
            sys.exit(2)
        except OSError as err:
            if err.errno not in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT, errno.EROFS, errno.EACCES):
                raise_internal(err)
            sys.stderr.write(f"error: cannot write ({err.strerror}); nothing was published, free space and rerun\n")
            sys.exit(2)
        except KeyboardInterrupt:
            sys.stderr.write(INTERRUPTED)
            sys.exit(130)
        except Exception as err:  # noqa: BLE001 - last-resort guard of a CLI
            if type(err).__name__ == "OutOfMemoryError":  # torch's, on a GPU: the user's to fix, not a bug
                sys.stderr.write(OUT_OF_MEMORY)
                sys.exit(2)
            raise_internal(err)

    return wrapper  # type: ignore[return-value]


def raise_internal(err: BaseException) -> NoReturn:
    """A bug: exit 1 with one line (the traceback with ``LEWC_DEBUG=1``)."""
    if os.environ.get("LEWC_DEBUG"):
        raise err
    sys.stderr.write(f"internal error: {type(err).__name__}: {err} (set LEWC_DEBUG=1 for a traceback)\n")
    sys.exit(1)
