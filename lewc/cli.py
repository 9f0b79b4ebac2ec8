"""``lewc SUBCOMMAND ...``: one command line for every front end, beside the ``python -m`` forms.

Each subcommand is the ``main(argv)`` of an existing module, imported by name only when that
subcommand runs. The drivers under ``experiments/`` and ``paper_figs/`` are the repository's, not
the library's: they are not installed as top-level packages (names as generic as ``experiments``
would collide in site-packages), and the library never imports them. This dispatcher is the one
exception, by module name and lazily; in a clone (an editable install) it finds them beside the
``lewc`` package, elsewhere ``lewc train`` says in one line that it needs a clone.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType

COMMANDS = {  # subcommand → (module with main(argv), what it does)
    "verify": ("lewc.verify", "verify a pair of networks: verdict per claim, controls, report (the default pair)"),
    "train": ("experiments.train", "train one endpoint"),
    "pair": ("experiments.train_pair", "train both endpoints of a pair"),
    "sweep": ("experiments.sweep", "train a grid of widths × seeds"),
    "study": ("experiments.study", "run a declarative grid of verify jobs (local, SLURM); --status, --collect"),
    "figs": ("paper_figs.__main__", "the paper's figures from stored results"),
    "table1": ("experiments.table1", "the paper's Table 1 from stored results"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: lewc {" + ",".join(COMMANDS) + "} [options]  (lewc SUBCOMMAND --help for its options)", ""]
    lines += [f"  {name:<{width}}  {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "Common options of every subcommand: -v/-q, --threads N, --version."]
    return "\n".join(lines)


def import_command(module: str) -> ModuleType:
    """Import a subcommand's module; the repository's drivers are looked up beside the lewc package."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as err:
        top = module.split(".")[0]
        if err.name not in (module, top):
            raise  # the module exists but lacks one of its own dependencies: a real error
    root = Path(__file__).resolve().parents[1]
    if (root / top / "__init__.py").is_file() and str(root) not in sys.path:
        sys.path.append(str(root))
        try:
            return importlib.import_module(module)
        except ModuleNotFoundError as err:
            if err.name not in (module, top):
                raise
    raise LookupError(module)


def main(argv: list[str] | None = None) -> None:
    import lewc

    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        sys.exit(0 if argv else 2)
    if argv[0] == "--version":
        print(f"lewc {lewc.__version__}")
        return
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        sys.stderr.write(f"lewc: error: unknown subcommand {name!r}; choose from {', '.join(COMMANDS)}\n")
        sys.exit(2)
    module = COMMANDS[name][0]
    import signal

    from lewc.core import errors

    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:  # Ctrl-C during torch's import: one line
        signal.signal(signal.SIGINT, errors._exit_on_interrupt)  # the command's cli_main restores Python's
    try:
        command = import_command(module)
    except LookupError:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        sys.stderr.write(
            f"lewc: error: 'lewc {name}' runs {module}, which is not here (the experiment drivers live in a "
            "clone of the lewc repository: pip install -e . there)\n"
        )
        sys.exit(2)
    command.main(rest)


if __name__ == "__main__":
    main()
