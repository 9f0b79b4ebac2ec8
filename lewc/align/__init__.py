"""Permutation alignment of B to A: the permutation groups of a traced model (``permspec``), the
methods (``methods``: weight matching, activation matching, controls) and the exact LEWC / LLFC
control pairs (``controls``). The methods' public names are re-exported here."""

from lewc.align.methods import (
    ACTIVATION_IMAGES,
    Alignment,
    AlignMethod,
    AlignTask,
    activation_matching,
    align,
    aligned_model,
    aligned_path,
    check_methods,
    get_method,
    load_or_align,
    method_names,
    random_alignment,
    random_direction,
    register_method,
    save_aligned,
    spec_for,
    weight_matching,
    weight_objective,
)

__all__ = [
    "ACTIVATION_IMAGES",
    "AlignMethod",
    "AlignTask",
    "Alignment",
    "activation_matching",
    "align",
    "aligned_model",
    "aligned_path",
    "check_methods",
    "get_method",
    "load_or_align",
    "method_names",
    "random_alignment",
    "random_direction",
    "register_method",
    "save_aligned",
    "spec_for",
    "weight_matching",
    "weight_objective",
]
