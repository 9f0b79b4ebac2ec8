"""Train both endpoints of a pair: ``python -m lewc.commands.train_pair --model mlp --width 16 --seeds 0,1``.

Each endpoint is an independent ``lewc.commands.train`` run (own initialisation and data order);
finished checkpoints are reused. Prints the two checkpoint paths, one per line.
"""

from __future__ import annotations

import argparse

from lewc.commands.sweep import parse_ints
from lewc.commands.train import add_config_arguments, run_training
from lewc.core import logs
from lewc.core.errors import LewcError, OneLineArgumentParser, cli_main


@cli_main
def main(argv: list[str] | None = None) -> None:
    parser = OneLineArgumentParser(
        prog="python -m lewc.commands.train_pair",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_config_arguments(parser)
    parser.add_argument("--width", type=int, required=True, help="width multiplier (positive integer)")
    parser.add_argument("--seeds", default="0,1", help="the two seeds, comma-separated as everywhere (default 0,1)")
    args = parser.parse_args(argv)
    logs.start(args)
    seeds = parse_ints(args.seeds, "--seeds")
    if len(seeds) != 2:
        raise LewcError(f"--seeds takes the pair's two seeds, e.g. 0,1; got {args.seeds!r}")
    if seeds[0] == seeds[1]:
        raise LewcError("the two seeds must differ: a pair of one seed is not independently trained")
    for seed in seeds:
        print(run_training(args, args.width, seed))


if __name__ == "__main__":
    main()
