"""``lewc SUBCOMMAND ...``: one command line for every front end, beside the ``python -m`` forms.

Each subcommand is the ``main(argv)`` of a module of the installed package (``lewc.verify`` and
``lewc.commands.*``), imported only when that subcommand runs (``import torch`` costs seconds; help
for the dispatcher itself should not).
"""

from __future__ import annotations

import importlib
import signal
import sys

from lewc.core import errors
from lewc.core.version import __version__

COMMANDS = {  # subcommand → (module with main(argv), what it does)
    "verify": ("lewc.verify", "verify a pair of networks: verdict per claim, controls, report (the default pair)"),
    "train": ("lewc.commands.train", "train one endpoint"),
    "pair": ("lewc.commands.train_pair", "train both endpoints of a pair"),
    "sweep": ("lewc.commands.sweep", "train a grid of widths × seeds"),
    "study": ("lewc.commands.study", "run a declarative grid of verify jobs (local, SLURM); --status, --collect"),
    "figs": ("lewc.commands.figs", "the paper's figures from stored results"),
    "trend": ("lewc.commands.trend", "the trend over width (and epochs, recipe arms) of stored studies"),
    "table1": ("lewc.commands.table1", "the paper's Table 1 from stored results"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: lewc {" + ",".join(COMMANDS) + "} [options]  (lewc SUBCOMMAND --help for its options)", ""]
    lines += [f"  {name:<{width}}  {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "Common options of every subcommand: -v/-q, --threads N, --version."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        sys.exit(0 if argv else 2)
    if argv[0] == "--version":
        print(f"lewc {__version__}")
        return
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        sys.stderr.write(f"lewc: error: unknown subcommand {name!r}; choose from {', '.join(COMMANDS)}\n")
        sys.exit(2)
    module = COMMANDS[name][0]
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:  # Ctrl-C during torch's import: one line
        signal.signal(signal.SIGINT, errors._exit_on_interrupt)  # the command's cli_main restores Python's
    importlib.import_module(module).main(rest)


if __name__ == "__main__":
    main()
