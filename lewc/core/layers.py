"""The layer order of lewc's packages: the one place it is written (docs/architecture.md cites it).

A unit is a package under ``lewc/`` (``lewc/sweep/``) or a module directly in it (``lewc/verify.py``);
``lewc`` is the package's own ``__init__`` (the public names). A unit may import units of lower layers
only — never one of its own layer nor one above — whether the import is at the top of a file or
inside a function. ``tests/test_layers.py`` checks every file under ``lewc/`` against this order
without importing anything.
"""

from __future__ import annotations

LAYERS: tuple[tuple[str, ...], ...] = (
    ("core",),  # conventions, errors, I/O and the data home, logs, validation, the version
    ("models",),  # model families, CapturingModel, traced models
    ("training",),  # datasets, recipes, training, checkpoints
    ("sweep",),  # merge two states, BatchNorm, the λ path, capture, memory
    ("align",),  # permutation groups, alignment methods, controls
    ("stats",),  # calibration, barriers, fits, conditions, claims
    ("reporting",),  # the results file's layout, report.json / report.md, figures
    ("pipeline",),  # the public API and the runs every client shares
    ("verify", "commands"),  # the clients: python -m lewc.verify and the drivers behind `lewc <cmd>`
    ("cli", "__main__", "lewc"),  # entry points: the `lewc` dispatcher, python -m lewc, lewc/__init__
)


def unit_of(module: str) -> str:
    """The unit a dotted module name of lewc belongs to: ``lewc.sweep.path`` → ``sweep``, ``lewc`` → ``lewc``."""
    parts = module.split(".")
    if parts[0] != "lewc":
        raise ValueError(f"{module!r} is not a module of lewc")
    return parts[1] if len(parts) > 1 else "lewc"


def layer_of(unit: str) -> int:
    """The unit's layer (0 is the bottom); ``KeyError`` for a unit missing from ``LAYERS``."""
    for index, units in enumerate(LAYERS):
        if unit in units:
            return index
    raise KeyError(unit)
