"""The command-line drivers beside ``lewc.verify``: train, pair, sweep, study, trend, table1, figs.

Each module is a thin client with a ``main(argv)``: it parses flags, builds typed configs and calls
the library. They are installed with lewc, so ``lewc <command>`` works from a wheel; the repository
keeps only the specs and scripts that drive them (``experiments/specs/``) and the benchmarks.
"""

from lewc.core.errors import quiet_startup_interrupts

quiet_startup_interrupts()  # Ctrl-C during imports is one line
