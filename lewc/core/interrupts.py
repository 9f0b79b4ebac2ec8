"""Ctrl-C that cannot deadlock a C library: interrupts deferred across a critical call.

Python runs a signal handler between bytecodes, so a ``KeyboardInterrupt`` can be raised anywhere
in library code — including between a lock's ``acquire`` and the ``try`` that would release it.
xarray's netCDF4 backend guards every HDF5/netCDF-C call with one process-wide, non-reentrant lock
(``xarray.backends.locks.CombinedLock`` of ``HDF5_LOCK`` and ``NETCDFC_LOCK``); an interrupt that
lands inside ``CombinedLock.acquire`` (after a constituent lock is taken, before the caller's
``with`` owns it) leaves the lock held, and ``to_netcdf``'s ``finally: store.close()`` then waits on
it forever (a futex wait until a second Ctrl-C). The C write itself cannot be interrupted anyway, so
``deferred_interrupts`` records SIGINT/SIGTERM for the duration of the write and raises after it, at
a point where no lock is held: the delay is bounded by the write, and a second Ctrl-C during it
exits at once (code 130; the unfinished file is a private temporary that no reader sees).

A helper thread would not do: the main thread would leave while the writer still holds the lock, and
the interpreter's exit (file managers closing in ``__del__``) would wait on that lock instead.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Iterator

from lewc.core.errors import INTERRUPTED

DEFERRED_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def deferred_interrupts() -> Iterator[None]:
    """Hold SIGINT/SIGTERM (Python-level handlers only) until the block ends, then deliver them."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signals are only handled in the main thread: nothing can interrupt this one
        return
    previous = {sig: signal.getsignal(sig) for sig in DEFERRED_SIGNALS}
    deferred = [sig for sig, handler in previous.items() if callable(handler)]
    pending: list[int] = []

    def record(signum: int, frame: object) -> None:
        if pending:  # asked twice: the user insists, leave now (only private temporaries are left)
            sys.stderr.write(INTERRUPTED)
            os._exit(130)
        pending.append(signum)

    for sig in deferred:
        signal.signal(sig, record)
    try:
        yield
    finally:
        for sig in deferred:
            signal.signal(sig, previous[sig])
        for signum in pending[:1]:
            previous[signum](signum, None)  # Python's default SIGINT handler raises KeyboardInterrupt here
