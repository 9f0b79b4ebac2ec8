"""Train a grid: ``python -m lewc.commands.sweep --model mlp --widths 1,2,4,8,16 --seeds 0,1,2,3``.

Every (width, seed) checkpoint is trained unless a finished one exists, so an interrupted sweep is
resumed by rerunning the same command (unfinished runs resume from their epoch snapshot).
"""

from __future__ import annotations

import argparse

from tqdm import tqdm

from lewc.commands.train import add_config_arguments, run_training
from lewc.core import logs
from lewc.core.errors import LewcError, OneLineArgumentParser, cli_main
from lewc.training.recipe import config_from_args


def parse_ints(text: str, what: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise LewcError(f"{what} must be comma-separated integers, got {text!r}") from None
    if not values:
        raise LewcError(f"{what} is empty")
    return values


@cli_main
def main(argv: list[str] | None = None) -> None:
    parser = OneLineArgumentParser(
        prog="python -m lewc.commands.sweep", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_config_arguments(parser)
    parser.add_argument("--widths", required=True, help="comma-separated width multipliers, e.g. 1,2,4,8,16")
    parser.add_argument("--seeds", default="0,1", help="comma-separated seeds (default 0,1)")
    args = parser.parse_args(argv)
    logs.start(args)
    widths, seeds = parse_ints(args.widths, "--widths"), parse_ints(args.seeds, "--seeds")
    grid = [(w, s) for w in widths for s in seeds]
    for w, s in grid:  # every cell's config is validated before anything is trained
        config_from_args(args, w, s)
    for w, s in tqdm(grid, desc="sweep", unit="model", disable=True if args.quiet else None):
        print(run_training(args, w, s), flush=True)


if __name__ == "__main__":
    main()
