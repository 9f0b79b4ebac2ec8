"""A dataset defined in one file, as a user would add one: a tiny in-memory set and its registered spec."""

from __future__ import annotations

import numpy as np

from lewc.training.data import DatasetInfo, DatasetSpec, register_dataset


def tiny_arrays():
    """Four classes of 1×8×8 images: a bright quadrant per class plus noise (uint8), 400 train / 200 test."""
    gen = np.random.default_rng(0)
    templates = np.full((4, 1, 8, 8), 96.0)
    for c in range(4):
        templates[c, 0, (c // 2) * 4 : (c // 2) * 4 + 4, (c % 2) * 4 : (c % 2) * 4 + 4] = 160.0

    def draw(n: int):
        y = gen.integers(0, 4, size=n)
        x = templates[y] + gen.normal(0, 25, size=(n, 1, 8, 8))
        return np.clip(x, 0, 255).astype(np.uint8), y.astype(np.int64)

    return (*draw(400), *draw(200))


TINY = register_dataset(
    DatasetSpec(
        DatasetInfo("tiny", (1, 8, 8), 4, (0.45,), (0.2,), False, "it is generated, nothing to get"),
        n_calib=50,
        generate=tiny_arrays,
        identity_tag="tiny_arrays(seed 0)/v1",
    )
)
