"""Regenerate the paper's figures from stored results only (``python -m paper_figs``)."""

from lewc.core.errors import quiet_startup_interrupts

quiet_startup_interrupts()  # Ctrl-C during imports is one line
