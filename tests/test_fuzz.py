"""Fuzzing the inputs a user controls: sidecars, safetensors files, verify's flags, study specs.

The property everywhere: a value is accepted, or refused as ``LewcError`` / exit 2 in one line —
never another exception (exit 1, a traceback), never a file outside the folder it belongs in.
Validators run in-process (hundreds of examples per second); a few vectors go through the real CLI.
"""

import json
import math
import struct
from pathlib import Path

import pytest
from cli_runner import run_cli
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from lewc import verify
from lewc.commands import study
from lewc.core.errors import LewcError
from lewc.core.io import sha256_file
from lewc.core.validate import PLAIN_NAME, check_plain_name
from lewc.pipeline.folders import pair_name
from lewc.training import checkpoints

FAST = settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))

NASTY = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=10**18, max_value=10**40),
    st.sampled_from([0, -1, 2**63, 10**30, 5001]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.sampled_from(["0/../../../escape", "..", ".hidden", "a/b", "", " ", "synthetic", "mlp", "bn", "none"]),
    st.lists(st.integers(-5, 100), max_size=5),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
)


@pytest.fixture(scope="module")
def valid_meta(trained_pair):
    return json.loads(checkpoints.sidecar_path(trained_pair[0]).read_text())


def one_line(err: BaseException) -> bool:
    return "\n" not in str(err) and len(str(err)) < 600


@FAST
@given(data=st.data())
def test_sidecar_fields_corrupted_one_at_a_time(valid_meta, data):
    meta = json.loads(json.dumps(valid_meta))
    fields = sorted(checkpoints.SIDECAR_FIELDS) + ["train_config.width", "train_config.seed", "train_config.lr"]
    field = data.draw(st.sampled_from(fields))
    value = data.draw(NASTY)
    if field.startswith("train_config."):
        meta["train_config"][field.split(".")[1]] = value
    elif data.draw(st.booleans()) or value is not None:
        meta[field] = value
    else:
        meta.pop(field, None)
    try:
        checkpoints.validate_meta(meta)
    except LewcError as err:
        assert one_line(err), err
        return
    record = checkpoints.CheckpointMeta.from_dict(meta)
    name = pair_name(record, record, "0" * 12)  # an accepted sidecar names a plain folder
    assert PLAIN_NAME.fullmatch(name) and "/" not in name


@FAST
@given(text=st.one_of(st.text(max_size=200), st.binary(max_size=200).map(lambda b: b.decode("latin1"))))
def test_any_sidecar_text_is_read_or_refused_in_one_line(tmp_path_factory, text):
    side = tmp_path_factory.getbasetemp() / "fuzz_sidecar.json"
    side.write_text(text, errors="surrogateescape")
    try:
        meta = checkpoints.read_meta(side)
    except LewcError as err:
        assert one_line(err)
        return
    checkpoints.validate_meta(meta)


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    header=st.one_of(
        st.dictionaries(
            st.sampled_from(["head.weight", "layers.0.weight", "__metadata__", "x"]),
            st.fixed_dictionaries(
                {
                    "dtype": st.sampled_from(["F32", "F16", "I64", "BOOL", "XX", 3]),
                    "shape": st.lists(st.integers(-2, 2**40), max_size=3),
                    "data_offsets": st.lists(st.integers(-1, 2**62), min_size=0, max_size=3),
                }
            ),
            max_size=3,
        ),
        st.text(max_size=20),
    ),
    length_lie=st.integers(-(2**63), 2**64 - 1),
    lie=st.booleans(),
    body=st.binary(max_size=64),
)
def test_any_safetensors_header_is_loaded_or_refused(trained_pair, tmp_path_factory, header, length_lie, lie, body):
    folder = tmp_path_factory.getbasetemp() / "fuzz_st"
    folder.mkdir(exist_ok=True)
    path = folder / "f.safetensors"
    raw = json.dumps(header).encode()
    n = length_lie % 2**64 if lie else len(raw)
    path.write_bytes(struct.pack("<Q", n) + raw + body)
    meta = json.loads(checkpoints.sidecar_path(trained_pair[0]).read_text())
    meta["sha256"] = sha256_file(path)  # past the checksum: the parser itself meets the header
    checkpoints.sidecar_path(path).write_text(json.dumps(meta))
    with pytest.raises(LewcError) as info:
        checkpoints.load(path)
    assert one_line(info.value)


FLAG_VALUES = st.one_of(
    st.integers(-3, 20).map(str),
    st.sampled_from(["0", "1e9", "1000000000", "9" * 30, "9" * 5001, "nan", "-inf", "", ",", "0,0.5,1", "a/b"]),
    st.text(max_size=8),
)
FLAGS = ["--width", "--widths", "--seeds", "--lams", "--n-test", "--bn-images", "--batch-size-eval", "--align"]
FLAGS += ["--epochs", "--lr", "--wd", "--batch-size", "--base-width", "--depth", "--model", "--dataset", "--norm"]


@FAST
@given(pairs=st.lists(st.tuples(st.sampled_from(FLAGS), FLAG_VALUES), max_size=4))
def test_verify_flag_vectors_validate_or_exit_2(pairs, capsys):
    argv = [x for flag, value in pairs for x in (flag, value)]
    try:
        args = verify.build_parser().parse_args(argv)
        verify.validate(args)
        from lewc.training.recipe import config_from_args

        for w in verify.parse_list(args.widths, int) if args.widths else [args.width]:
            config_from_args(args, w, 0)
    except SystemExit as exc:
        assert exc.code == 2
        assert len(capsys.readouterr().err.strip().splitlines()) == 1
    except LewcError as err:
        assert one_line(err), err


def toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float) and not math.isfinite(v):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf")
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    return "[" + ", ".join(toml_value(x) for x in v) + "]"


SPEC_VALUE = st.one_of(
    st.booleans(),
    st.integers(-2, 5),
    st.integers(2**40, 2**62),
    st.floats(-1, 2, allow_nan=False),
    st.sampled_from(["no", "../../x", "mlp", "synthetic", "none,weights", "0,0.5,1", "x"]),
    st.lists(st.one_of(st.integers(-1, 4), st.floats(0, 1), st.booleans()), max_size=3),
)
STUDY_KEYS = sorted(study.STUDY_KEYS)


@FAST
@given(
    fields=st.dictionaries(st.sampled_from(STUDY_KEYS), SPEC_VALUE, max_size=4),
    axes=st.dictionaries(st.sampled_from(sorted(study.AXES)), SPEC_VALUE, min_size=1, max_size=2),
)
def test_study_specs_load_or_are_refused_in_one_line(tmp_path_factory, fields, axes):
    study_table = {"name": "fuzz", "model": "mlp", "dataset": "synthetic"} | fields
    text = "[study]\n" + "".join(f"{k} = {toml_value(v)}\n" for k, v in study_table.items())
    text += "[grid]\n" + "".join(f"{k} = {toml_value(v if isinstance(v, list) else [v])}\n" for k, v in axes.items())
    path = tmp_path_factory.getbasetemp() / "fuzz_spec.toml"
    path.write_text(text)
    try:
        spec = study.load_spec(path)
    except LewcError as err:
        assert one_line(err), err
        return
    check_plain_name(spec.name, "name")
    assert isinstance(spec.controls, bool) and spec.pairs >= 1
    assert spec.n_test is None or spec.n_test >= verify.MIN_TEST_IMAGES


CLI_FLAGS = st.lists(
    st.sampled_from(
        [
            ["--n-test", "150"],
            ["--n-test", "5"],
            ["--n-test", "99999999"],
            ["--lams", "0,0.5,1"],
            ["--lams", "0,2"],
            ["--align", "none"],
            ["--align", "bogus"],
            ["--bn-images", "1"],
            ["--batch-size-eval", "0"],
            ["--width", "9" * 40],
        ]
    ),
    min_size=1,
    max_size=3,
)


@settings(max_examples=4, deadline=None, suppress_health_check=list(HealthCheck))
@given(extra=CLI_FLAGS)
def test_the_real_cli_exits_0_complete_or_2_with_nothing_written(trained_pair, tmp_path_factory, extra, capsys):
    flags = [x for pair in extra for x in pair]
    assume("--lams" in flags or "--n-test" in flags)  # a full default sweep is slow here
    home = tmp_path_factory.mktemp("cli")
    out = home / "out"
    argv = ["--ckpt-a", str(trained_pair[0]), "--ckpt-b", str(trained_pair[1]), "--out", str(out)]
    argv += ["--quiet", "--no-controls", "--align", "none", "--lams", "0,0.5,1"] + flags
    code, stdout, stderr = run_cli(verify.main, argv, capsys)
    assert code in (0, 2), stderr
    lock = home / ".publish.lock"  # publish's lock file beside the folders (filelock keeps it; lewc.pipeline.folders)
    outside = [p for p in home.rglob("*") if out not in p.parents and p not in (out, lock)]
    assert outside == [], outside
    if code == 2:
        assert len(stderr.strip().splitlines()) == 1 and not out.exists()
    else:
        assert Path(stdout.strip().splitlines()[-1]) == out / "report.json"
        assert (out / "results.nc").is_file() and json.loads((out / "report.json").read_text())["lams"]
