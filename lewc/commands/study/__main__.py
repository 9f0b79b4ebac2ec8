"""``python -m lewc.commands.study SPEC.toml``: the study's command line (``lewc.commands.study.cli``)."""

from lewc.commands.study.cli import main

main()
