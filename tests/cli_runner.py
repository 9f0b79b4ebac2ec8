"""Run a command's ``main(argv)`` in the test process, as a user's shell would see it."""

from __future__ import annotations

from collections.abc import Callable, Sequence


def run_cli(main: Callable[[Sequence[str]], object], argv: Sequence[str], capsys) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of ``main(argv)``: 0 when it returns, the code of its SystemExit otherwise.

    In-process rather than a subprocess, so the tests pay ``import torch`` once.
    """
    try:
        main(list(argv))
        code = 0
    except SystemExit as exc:
        code = exc.code
    out = capsys.readouterr()
    return code, out.out, out.err
