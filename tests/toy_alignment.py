"""An alignment method defined in one file, as a user would add one: a function and one registration."""

from __future__ import annotations

import numpy as np

from lewc.align.methods import Alignment, AlignMethod, AlignTask, register_method


def reverse_units(task: AlignTask):
    """Reverse the order of every permutation group's units: a permutation, so B's function is unchanged."""
    perms = [np.arange(n)[::-1].copy() for n in task.spec.group_sizes]
    return task.permuted(Alignment("reverse", perms, float("nan"), float("nan"), 0, 0.0, task.spec))


REVERSE = register_method(AlignMethod("reverse", reverse_units, description="reversed unit order (a toy control)"))
