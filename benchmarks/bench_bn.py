"""How many training images does BatchNorm re-estimation need? 10k (lewc's default) vs a full epoch.

For a BN pair, re-estimates the running statistics of the merged model at each λ on n images
(1k, 2k, 5k, 10k) and on the whole training split, and prints the test accuracy of each against the
full-epoch reference, with the time each took. Default pair: two MLP ×4 with BN on Fashion-MNIST,
trained here if missing (a minute on CPU).

    python benchmarks/bench_bn.py [--ckpt-a A --ckpt-b B] [--device cuda]
"""

from __future__ import annotations

import argparse
import time

import torch

from lewc.sweep.batchnorm import bn_templates, reestimate, reestimation_images
from lewc.sweep.merge import Pair
from lewc.training import checkpoints
from lewc.training.data import load_dataset
from lewc.training.recipe import default_config
from lewc.training.train import train

LAMS = [0.25, 0.5, 0.75]
BUDGETS = [1000, 2000, 5000, 10_000]


@torch.no_grad()
def accuracy(pair: Pair, state, ds) -> float:
    correct = sum(int((pair.forward(state, x).argmax(1) == y).sum()) for x, y in ds.batches("test", 1000))
    return correct / len(ds.test)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt-a")
    parser.add_argument("--ckpt-b")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    if not args.ckpt_a:
        args.ckpt_a, args.ckpt_b = (
            train(
                default_config("mlp", 4, "fashion-mnist", s, norm="bn", base_width=32),
                None,
                args.device,
                progress=False,
            )
            for s in (0, 1)
        )
    model_a, meta_a = checkpoints.load(args.ckpt_a, args.device)
    model_b, meta_b = checkpoints.load(args.ckpt_b, args.device)
    pair = Pair(model_a, model_b, meta_a, meta_b)
    pair.template.to(args.device)
    ds = load_dataset(meta_a.dataset, args.device)
    template = bn_templates(pair)
    print(f"pair {args.ckpt_a} / {args.ckpt_b}")
    print(f"{'λ':>5s} {'images':>7s} {'test acc':>9s} {'Δ vs full epoch (pp)':>21s} {'seconds':>8s}")
    for lam in LAMS:
        t0 = time.perf_counter()
        full = accuracy(
            pair,
            reestimate(pair, pair.state_at(lam), reestimation_images(ds, len(ds.train)), ds, template=template),
            ds,
        )
        t_full = time.perf_counter() - t0
        for n in BUDGETS:
            t0 = time.perf_counter()
            acc = accuracy(
                pair, reestimate(pair, pair.state_at(lam), reestimation_images(ds, n), ds, template=template), ds
            )
            print(f"{lam:5.2f} {n:7d} {acc:9.4f} {100 * (acc - full):21.2f} {time.perf_counter() - t0:8.2f}")
        print(f"{lam:5.2f} {len(ds.train):7d} {full:9.4f} {0.0:21.2f} {t_full:8.2f}")


if __name__ == "__main__":
    main()
