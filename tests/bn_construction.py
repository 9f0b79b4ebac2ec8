"""Small BatchNorm networks (ResNet-20 with projection shortcuts, VGG-11) on synthetic data, through the
whole pipeline with their controls: the constructions behind docs/conventions.md's effective depth."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lewc.models import build
from lewc.pipeline.api import device_dataset
from lewc.pipeline.folders import AnalysisOptions
from lewc.pipeline.pair import RunSettings, analyse_pair
from lewc.sweep.merge import Pair
from lewc.training.checkpoints import CheckpointMeta

IN_SHAPE = (3, 8, 8)
N_CLASSES = 4
LAMS = (0.0, 0.25, 0.5, 0.75, 1.0)


def make_data(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Class templates plus noise (10% of labels random, so calibration has a finite optimum)."""
    gen = torch.Generator().manual_seed(seed)
    templates = torch.randn(N_CLASSES, *IN_SHAPE, generator=torch.Generator().manual_seed(99))
    y = torch.randint(0, N_CLASSES, (n,), generator=gen)
    x = templates[y] + 1.5 * torch.randn(n, *IN_SHAPE, generator=gen)
    flip = torch.rand(n, generator=gen) < 0.1
    return x, torch.where(flip, torch.randint(0, N_CLASSES, (n,), generator=gen), y)


def meta(model: str, base_width: int, seed: int) -> CheckpointMeta:
    return CheckpointMeta.record(
        model=model,
        width=1,
        base_width=base_width,
        depth=None,
        norm="bn",
        bias=True,
        num_classes=N_CLASSES,
        in_shape=list(IN_SHAPE),
        seed=seed,
        dataset="synthetic",
        sha256=f"{model}-{base_width}-seed{seed}",
    )


def train(model_name: str, base_width: int, seed: int, data, epochs: int = 3):
    torch.manual_seed(seed)
    model = build(model_name, 1, N_CLASSES, IN_SHAPE, norm="bn", bias=True, base_width=base_width)
    x, y = data
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-3)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x), 64):
            idx = order[i : i + 64]
            opt.zero_grad()
            F.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
    return model.eval()


def run(model_name: str, base_width: int, seeds=(0, 1), n_train=1200, n_test=300, epochs=3, align=("none", "weights")):
    """(PairResult, data) of one trained pair with both controls (and weight matching)."""
    train_data, test_data = make_data(n_train, 0), make_data(n_test, 1)
    a, b = (train(model_name, base_width, s, train_data, epochs) for s in seeds)
    dev = torch.device("cpu")
    ds = device_dataset(train_data, test_data, N_CLASSES, dev, n_calib=300)
    pair = Pair(a, b, meta(model_name, base_width, seeds[0]), meta(model_name, base_width, seeds[1]))
    options = AnalysisOptions(LAMS, None, 600, True, tuple(align))
    settings = RunSettings(batch_size_eval=300, progress=False)
    return analyse_pair(pair, ds, options, settings, dev, {"command": "test"})
