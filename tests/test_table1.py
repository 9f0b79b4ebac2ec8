"""lewc.commands.table1 --smoke: the whole Table 1 path (train, both alignments, the table) on tiny networks."""

from __future__ import annotations

import json
import re
import shlex

from lewc.commands import table1


def test_smoke_prints_the_papers_numbers_beside_lewcs(tmp_path, isolated_data_home, capsys):
    table1.main(["--smoke", "--out", str(tmp_path / "t1")])
    out = capsys.readouterr().out
    for paper_number in ("0.519", "0.013", "-0.027", "1.308", "7.000", "2.694", "5.135", "0.173"):
        assert paper_number in out
    rows = [line for line in out.splitlines() if line.startswith("| ") and "synthetic" in line]
    assert [r.split("|")[1].strip().split(" ×")[0] for r in rows] == ["MLP", "VGG-11", "ResNet-20"]
    summary = json.loads((tmp_path / "t1" / "table1.json").read_text())
    for name in ("mlp", "vgg11", "resnet20"):
        (pair,) = summary["rows"][name]
        assert set(pair) == {"none", "weights"}
        for acc, loss in pair.values():
            assert -100 <= acc <= 100 and loss == loss  # measured, finite
    # the table's lewc cells are the report.json numbers, not placeholders
    first = rows[0].split("|")
    assert re.fullmatch(r"-?\d+\.\d{3}", first[4].strip())
    assert float(first[4]) == round(summary["rows"]["mlp"][0]["none"][0], 3)


def test_unknown_rows_are_one_line_errors(capsys):
    import pytest

    with pytest.raises(SystemExit) as exc:
        table1.main(["--rows", "mlp,bert", "--dry-run"])
    assert exc.value.code == 2
    assert "unknown row" in capsys.readouterr().err


def test_a_row_job_is_exactly_what_verify_runs_for_the_printed_command():
    """Table 1 runs typed configs and options; verify's parser makes the same from the command it prints."""
    import argparse

    from lewc.training.recipe import config_from_args
    from lewc.verify import build_parser, validate

    for smoke in (True, False):
        args = argparse.Namespace(smoke=smoke, device=None, data_root=None, ckpt_dir=None)
        for row in table1.ROWS.values():
            request = table1.row_job(row, 1, args)
            configs, options = request.endpoints.configs, request.options
            parsed = build_parser().parse_args(table1.row_argv(row, 1, args))
            verify_options, widths, seeds = validate(parsed)
            assert options == verify_options and request.context.command.endswith(
                shlex.join(table1.row_argv(row, 1, args))
            )
            assert [c.as_dict() for c in configs] == [config_from_args(parsed, widths[0], s).as_dict() for s in seeds]
            assert configs[0].recipe == "paper" and [c.seed for c in configs] == [2, 3]
