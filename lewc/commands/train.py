"""Train one endpoint: ``python -m lewc.commands.train --model mlp --width 16 --seed 0``.

The command-line front end of ``lewc.training.train.train`` (the loop, resumption and determinism are
documented there). The dataset defaults to the model family's (fashion-mnist for the mlp, cifar10
for the convnets), exactly as ``lewc.verify`` resolves it, so both name the same checkpoint.
Under ``torchrun --nproc_per_node N -m lewc.commands.train ...`` it trains with DDP. The last line
printed is the checkpoint's path; ``--dry-run`` prints that path without training.
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

from lewc.core import logs
from lewc.core.errors import OneLineArgumentParser, cli_main
from lewc.training import checkpoints
from lewc.training.recipe import add_recipe_arguments, config_from_args
from lewc.training.train import checkpoint_dir, train

log = logging.getLogger("lewc.commands.train")  # not __name__: that is "__main__" under python -m


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of how (not what) to train, shared by train, train_pair and sweep."""
    g = parser.add_argument_group("run")
    g.add_argument("--ckpt-dir", type=Path, help="checkpoint folder (default data/checkpoints/)")
    g.add_argument("--out", dest="ckpt_dir", type=Path, help=argparse.SUPPRESS)  # before --ckpt-dir; same meaning
    g.add_argument(
        "--tensorboard", type=Path, metavar="DIR", help="write TensorBoard scalars per epoch under DIR/<checkpoint>/"
    )
    g.add_argument("--device", help="cpu, cuda or cuda:N (default: cuda when available)")
    g.add_argument("--data-root", help="folder searched first for the dataset files")
    g.add_argument("--force", action="store_true", help="retrain even if a finished checkpoint or snapshot exists")
    g.add_argument("--compile", action="store_true", help="torch.compile the training step (GPU)")
    g.add_argument(
        "--dry-run", action="store_true", help="print the checkpoint path(s) that would be written, train nothing"
    )
    logs.add_common_arguments(parser)


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """The recipe's flags (lewc.training.recipe) and the run flags."""
    add_recipe_arguments(parser)
    add_run_arguments(parser)


def run_training(args: argparse.Namespace, width: int, seed: int) -> Path:
    cfg = config_from_args(args, width, seed)
    if args.dry_run:
        return cfg.checkpoint_path(args.ckpt_dir or checkpoint_dir())
    return train(
        cfg,
        args.ckpt_dir,
        args.device,
        args.force,
        args.compile,
        args.data_root,
        progress=not args.quiet,
        tensorboard=args.tensorboard,
    )


@cli_main
def main(argv: list[str] | None = None) -> None:
    parser = OneLineArgumentParser(
        prog="python -m lewc.commands.train", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_config_arguments(parser)
    parser.add_argument("--width", type=int, required=True, help="width multiplier (positive integer)")
    parser.add_argument("--seed", type=int, default=0, help="seed of initialisation and data order (default 0)")
    args = parser.parse_args(argv)
    logs.start(args)
    path = run_training(args, args.width, args.seed)
    if int(os.environ.get("RANK", "0")) == 0:
        if not args.dry_run:
            meta = checkpoints.read_checkpoint_meta(path)
            log.info("test accuracy %.4f, test loss %.4f", meta.test_acc, meta.test_loss)
        print(path)


if __name__ == "__main__":
    main()
