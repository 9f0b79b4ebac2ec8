"""Experiment drivers: train checkpoints (one, a pair, a width sweep) with lewc.training.train."""

from lewc.core.errors import quiet_startup_interrupts

quiet_startup_interrupts()  # only under ``python -m``: Ctrl-C during imports is one line
