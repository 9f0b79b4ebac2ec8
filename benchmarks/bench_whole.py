"""The whole ``python -m lewc.verify`` command against the same command without controls and alignment.

    PYTHONPATH=. python benchmarks/bench_whole.py [--width 4] [--dataset fashion-mnist] [--data-root DIR]
    PYTHONPATH=. python benchmarks/bench_whole.py --model resnet20 --width 4 --dataset synthetic --allow-chance

Trains the pair first (one epoch; not timed), then times, each in a fresh subprocess with ``--force``
(so nothing is reused), the default command (weight matching and both controls) and
``--no-controls --align none``, and prints their wall times and ratio as JSON. MLP ×4 is 3×2048 units
(base width 512). ResNet-20 ×4 on the synthetic CIFAR-shaped set (3×16×16, 1,000 test images) has
64-128-256 channels and BatchNorm, so its controls re-estimate BN as the main sweep does. The target:
a ratio of at most 2.5 (5.0 before the rework of the controls and of weight matching). The
subprocesses import lewc from PYTHONPATH: set it to the tree measured. One epoch leaves the ResNet at
chance on the synthetic set: ``--allow-chance`` times it anyway (the same forwards and BN passes; weight
matching may take a different number of passes than on a trained pair).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time


def run(argv: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "lewc.verify", *argv], check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="mlp", help="mlp or resnet20 (any registered family)")
    p.add_argument("--width", type=int, default=4)
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--data-root", default=None)
    p.add_argument("--device", default="cpu")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--allow-chance", action="store_true", help="time a pair at chance accuracy too")
    args = p.parse_args()
    base = ["--model", args.model, "--width", str(args.width), "--dataset", args.dataset, "--epochs", str(args.epochs)]
    base += ["--allow-slow"] + (["--allow-chance"] if args.allow_chance else [])
    base += ["--device", args.device, "--quiet", "--force"]
    base += ["--data-root", args.data_root] if args.data_root else []
    with tempfile.TemporaryDirectory() as tmp:
        run(base + ["--no-controls", "--align", "none", "--out", f"{tmp}/warm"])  # trains the pair; not timed
        bare = run(base + ["--no-controls", "--align", "none", "--out", f"{tmp}/bare"])
        whole = run(base + ["--out", f"{tmp}/whole"])
    command = "python -m lewc.verify " + " ".join(base)
    print(json.dumps({"command": command, "bare_s": bare, "whole_s": whole, "ratio": whole / bare}, indent=1))


if __name__ == "__main__":
    main()
