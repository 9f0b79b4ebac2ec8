"""The range of every size a record names, written once.

``TrainConfig.validate`` (``training.recipe``), the checkpoint sidecar's schema (``CheckpointMeta`` in
``training.checkpoints``), ``models.registry.build`` and the command lines' flag checks all read this
table, so one record is never held to four different limits. A size beyond a limit is a one-line
``LewcError`` instead of an overflow in torch: ×4096 of a 512-unit MLP is 2M units per layer
(4·10^12 weights), beyond any single device.
"""

from __future__ import annotations

from typing import Any

from lewc.core.validate import check_int

LIMITS: dict[str, tuple[int, int]] = {  # name → (lowest, highest), both allowed
    "width": (1, 4096),
    "base_width": (1, 65536),
    "depth": (1, 1024),
    "epochs": (1, 10**6),
    "batch_size": (1, 10**8),
    "seed": (0, 2**63 - 1),
    "num_classes": (2, 100_000),
    "n_calib": (0, 10**8),
    "in_shape": (1, 4096),  # each dimension of an input shape
    "parameters": (0, 10**15),
    "world_size": (1, 10**6),
    "threads": (1, 10**6),
}
MAX_COUNT = 10**8  # counts with no record field of their own (test images, BN images, eval batch): far above any run


def check_limit(value: Any, name: str, what: str | None = None) -> int:
    """``value`` as an int within ``LIMITS[name]``, or a one-line ``LewcError`` naming ``what``."""
    lo, hi = LIMITS[name]
    return check_int(value, what or name.replace("_", " "), lo, hi)
