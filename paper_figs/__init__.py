"""Regenerate the paper's figures from stored results only (``python -m paper_figs``)."""
