"""Shared fixtures: the synthetic dataset, tiny trained pairs, an isolated data home."""

from __future__ import annotations

import os

import pytest
import torch
from hypothesis import settings

from lewc.training.data import load_dataset
from lewc.training.recipe import default_config

# two cores: one pytest process uses both; with pytest-xdist's two workers (README's command) each uses one
torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER") else 2)

# CI replays the same examples every run (derandomize), so a red CI is a regression, not a new draw;
# local runs keep exploring and store what they find in .hypothesis/ (how the fuzz cases were found).
settings.register_profile("ci", derandomize=True)
if os.environ.get("CI"):
    settings.load_profile("ci")


@pytest.fixture(autouse=True)
def isolated_data_home(tmp_path, monkeypatch):
    """Every test gets its own data/ so nothing leaks between tests or into the repository."""
    monkeypatch.setenv("LEWC_DATA", str(tmp_path / "data"))
    return tmp_path / "data"


@pytest.fixture(scope="session")
def synthetic():
    return load_dataset("synthetic", "cpu")


@pytest.fixture(scope="session")
def trained_pair(tmp_path_factory, synthetic):
    """Two MLP endpoints trained on the synthetic dataset (seeds 0 and 1), as checkpoint paths."""
    from lewc.training.train import train

    out = tmp_path_factory.mktemp("ckpt")
    paths = [
        train(
            default_config("mlp", 2, "synthetic", s, base_width=32, epochs=2),
            out,
            "cpu",
            progress=False,
            dataset=synthetic,
        )
        for s in (0, 1)
    ]
    return paths


@pytest.fixture
def device_context():
    """A factory of the context a device test runs in: the CPU-backed stand-in for CUDA
    (tests/fakecuda.py, yielding its counters), or real CUDA when ``LEWC_TEST_DEVICE=cuda`` on a
    machine with a GPU (yielding None: the counters are the harness's)."""
    import contextlib

    from fakecuda import FakeCuda

    if os.environ.get("LEWC_TEST_DEVICE") == "cuda" and torch.cuda.is_available():
        return contextlib.nullcontext
    return FakeCuda


@pytest.fixture
def toy_claim():
    """tests/toy_claim.py's claim, registered for this test only (the module registers on first import,
    so a later test that imports it again would otherwise find it unregistered)."""
    import toy_claim as module

    from lewc.stats.claims import register_claim, unregister_claim

    register_claim(module.ENDPOINTS_AGREE)
    try:
        yield module
    finally:
        unregister_claim(module.ENDPOINTS_AGREE.id)
