"""Permutation alignment of B to A: the permutation groups of a traced model (``permspec``), the
methods (``methods``: weight matching, activation matching, controls) and the exact LEWC / LLFC
control pairs (``controls``). The methods' public names are re-exported here."""

from lewc.align.methods import (
    ACTIVATION_IMAGES,
    METHODS,
    Alignment,
    activation_matching,
    align,
    aligned_model,
    aligned_path,
    check_methods,
    load_or_align,
    random_alignment,
    random_direction,
    save_aligned,
    spec_for,
    weight_matching,
    weight_objective,
)

__all__ = [
    "ACTIVATION_IMAGES",
    "METHODS",
    "Alignment",
    "activation_matching",
    "align",
    "aligned_model",
    "aligned_path",
    "check_methods",
    "load_or_align",
    "random_alignment",
    "random_direction",
    "save_aligned",
    "spec_for",
    "weight_matching",
    "weight_objective",
]
