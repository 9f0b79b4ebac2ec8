"""Training throughput of ``lewc.commands.train`` against a plain PyTorch loop, in one process.

Two baselines, the same model, optimizer, batch size and number of images:

* DataLoader: what most LMC repositories do — a torchvision-style ``Dataset`` returning one image
  at a time through ``transforms`` (per-sample normalisation; random crop and flip for CIFAR),
  batched by ``DataLoader``;
* tensor loop: what a careful researcher writes — the training set as one tensor on the device,
  a shuffled index per epoch, whole-batch normalisation and the same batched crop/flip as lewc
  (``lewc.training.data.random_crop_flip``), a bare SGD step. This is the fair one: lewc's trainer is this
  loop plus a warm-up/cosine schedule, loss and accuracy accounting without host syncs, resumable
  snapshots and (on CUDA) bf16 autocast and channels_last.

    python benchmarks/bench_train.py [--device cuda] [--epochs 1]

Prints images/s of lewc and both baselines and the ratios per configuration. Then, for the study's
wide MLPs (3×2048 and 3×4096 at batch 500, MNIST-shaped), lewc's training GFLOP/s — FLOPs of one
real forward + backward counted by ``torch.utils.flop_counter`` — against the machine's own peak: a
bare fp32 matmul of the same shape (500 × 4096 @ 4096 × 4096) timed in the same process.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch
import torch.nn.functional as F
from torchvision.transforms import v2

from lewc.models import build
from lewc.training.data import DeviceDataset, Split, dataset_info, load_dataset, random_crop_flip
from lewc.training.recipe import default_config
from lewc.training.train import train


class PerSampleDataset(torch.utils.data.Dataset):
    """One (image, label) at a time through torchvision transforms, as torchvision datasets do."""

    def __init__(self, split: Split, info, augment: bool):
        self.x, self.y = split.x.cpu(), split.y.cpu()
        steps = [
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(
                info.mean * (info.in_shape[0] // len(info.mean)), info.std * (info.in_shape[0] // len(info.std))
            ),
        ]
        if augment:
            steps = [v2.RandomCrop(info.in_shape[1], padding=4), v2.RandomHorizontalFlip(), *steps]
        self.transform = v2.Compose(steps)

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int):
        return self.transform(self.x[i]), self.y[i]


def baseline_model(cfg, ds: DeviceDataset, device: torch.device):
    """The recipe's model and a bare SGD optimiser, as both baselines build them."""
    torch.manual_seed(cfg.seed)
    model = (
        build(
            cfg.model, cfg.width, ds.info.num_classes, ds.info.in_shape, cfg.norm, cfg.bias, cfg.base_width, cfg.depth
        )
        .to(device)
        .train()
    )
    return model, torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.wd)


def baseline_images_per_s(cfg, ds: DeviceDataset, device: torch.device, epochs: int) -> float:
    model, opt = baseline_model(cfg, ds, device)
    loader = torch.utils.data.DataLoader(
        PerSampleDataset(ds.train, ds.info, ds.info.augment),
        batch_size=cfg.batch_size,
        shuffle=True,
        drop_last=True,
        num_workers=0,
    )
    seen = 0
    t0 = time.perf_counter()
    for _ in range(epochs):
        for x, y in loader:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            seen += len(y)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return seen / (time.perf_counter() - t0)


def tensor_loop_images_per_s(cfg, ds: DeviceDataset, device: torch.device, epochs: int) -> float:
    model, opt = baseline_model(cfg, ds, device)
    gen = torch.Generator(device=device).manual_seed(cfg.seed)
    steps = len(ds.train) // cfg.batch_size
    seen = 0
    t0 = time.perf_counter()
    for _ in range(epochs):
        order = torch.randperm(len(ds.train), device=device, generator=gen)
        for step in range(steps):
            idx = order[step * cfg.batch_size : (step + 1) * cfg.batch_size]
            x = ds.train.x[idx]
            if ds.info.augment:
                x = random_crop_flip(x, gen)
            loss = F.cross_entropy(model(ds.normalize(x)), ds.train.y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            seen += len(idx)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return seen / (time.perf_counter() - t0)


def lewc_images_per_s(cfg, ds: DeviceDataset, device: torch.device) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        path = train(cfg, tmp, str(device), progress=False, dataset=ds)
        from lewc.training import checkpoints

        history = checkpoints.read_checkpoint_meta(path).history
    return sum(h["images_per_s"] * h["seconds"] for h in history) / sum(h["seconds"] for h in history)


def cifar_shaped(n: int, device: torch.device) -> DeviceDataset:
    """Random CIFAR-shaped uint8 data: throughput does not depend on pixel values."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=gen)
    y = torch.randint(0, 10, (n,), generator=gen)
    split = Split(x.to(device), y.to(device))
    return DeviceDataset(dataset_info("cifar10"), split, split, Split(x[:500].to(device), y[:500].to(device)), device)


def matmul_peak_gflops(device: torch.device, n: int = 500, k: int = 4096, repeats: int = 10) -> float:
    """The bare-matmul rate of this device and thread count (best of three timed blocks)."""
    a = torch.randn(n, k, device=device)
    w = torch.randn(k, k, device=device)
    for _ in range(3):
        a @ w
    best = float("inf")
    for _ in range(3):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(repeats):
            a @ w
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, (time.perf_counter() - t0) / repeats)
    return 2 * n * k * k / best / 1e9


def training_flops_per_image(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """FLOPs of one forward + backward step per image, counted on a real step."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        F.cross_entropy(model(x), y).backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops() / len(x)


def mnist_shaped(n: int, device: torch.device) -> DeviceDataset:
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (n, 1, 28, 28), dtype=torch.uint8, generator=gen)
    y = torch.randint(0, 10, (n,), generator=gen)
    split = Split(x.to(device), y.to(device))
    return DeviceDataset(dataset_info("mnist"), split, split, Split(x[:500].to(device), y[:500].to(device)), device)


def flops_table(device: torch.device, hidden=(2048, 4096), batch: int = 500, steps: int = 8) -> None:
    """lewc's training GFLOP/s on the wide MLPs against the bare matmul peak (target ≥ 70%)."""
    peak = matmul_peak_gflops(device)
    print(f"\nbare matmul peak (500×4096 @ 4096×4096, fp32): {peak:.1f} GFLOP/s")
    print(f"{'MLP, batch 500':24s} {'GFLOP/img':>10s} {'img/s':>8s} {'GFLOP/s':>8s} {'of peak':>8s}")
    ds = mnist_shaped(batch * steps, device)
    for width in hidden:
        cfg = default_config("mlp", 1, "mnist", 0, recipe="paper", base_width=width, epochs=1, batch_size=batch)
        model = build("mlp", 1, 10, (1, 28, 28), base_width=width).to(device)
        x, y = ds.normalize(ds.train.x[:batch]), ds.train.y[:batch]
        flops = training_flops_per_image(model, x, y)
        rate = lewc_images_per_s(cfg, ds, device)
        achieved = flops * rate / 1e9
        label = f"3×{width}"
        print(f"{label:24s} {flops / 1e9:10.3f} {rate:8.1f} {achieved:8.1f} {achieved / peak:8.0%}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--flops-only", action="store_true", help="only the wide-MLP GFLOP/s table")
    args = parser.parse_args()
    device = torch.device(args.device)
    if args.flops_only:
        flops_table(device)
        return
    fmnist = load_dataset("fashion-mnist", device)
    configs = [
        ("mlp ×1 (3×512), Fashion-MNIST", default_config("mlp", 1, "fashion-mnist", 0, epochs=args.epochs), fmnist)
    ]
    n = 4096 if device.type == "cpu" else 50_000
    configs.append(
        (
            "resnet20 ×1, CIFAR-shaped (augmented)",
            default_config("resnet20", 1, "cifar10", 0, epochs=args.epochs),
            cifar_shaped(n, device),
        )
    )
    print(f"device: {device}, torch {torch.__version__}, threads {torch.get_num_threads()}")
    cols = f"{'lewc img/s':>11s} {'DataLoader':>11s} {'ratio':>6s} {'tensor loop':>12s} {'ratio':>6s}"
    print(f"{'configuration':40s} {cols}")
    for label, cfg, ds in configs:
        base = baseline_images_per_s(cfg, ds, device, args.epochs)
        loop = tensor_loop_images_per_s(cfg, ds, device, args.epochs)
        ours = lewc_images_per_s(cfg, ds, device)
        print(f"{label:40s} {ours:11.0f} {base:11.0f} {ours / base:6.2f} {loop:12.0f} {ours / loop:6.2f}", flush=True)
    flops_table(device)


if __name__ == "__main__":
    main()
