import json

import pytest
import torch

from lewc.core.errors import LewcError
from lewc.models import build
from lewc.training import checkpoints

META = {
    "model": "vgg11",
    "width": 1,
    "base_width": 8,
    "depth": None,
    "norm": "bn",
    "bias": True,
    "num_classes": 10,
    "in_shape": [3, 16, 16],
    "dataset": "synthetic",
    "seed": 0,
}


@pytest.fixture
def saved(tmp_path):
    torch.manual_seed(0)
    model = build("vgg11", 1, 10, (3, 16, 16), norm="bn", base_width=8).eval()
    path = checkpoints.save(model, tmp_path / "m", checkpoints.CheckpointMeta.record(**META))
    return model, path


def edit_sidecar(path, **changes):
    """Rewrite fields of a checkpoint's JSON sidecar in place."""
    side = checkpoints.sidecar_path(path)
    side.write_text(json.dumps(json.loads(side.read_text()) | changes))


def test_save_load_round_trip_gives_identical_outputs(saved):
    model, path = saved
    loaded, meta = checkpoints.load(path)
    x = torch.randn(4, 3, 16, 16)
    assert torch.equal(model(x), loaded(x))
    assert isinstance(meta, checkpoints.CheckpointMeta)
    assert meta.sha256 and meta.torch_version == torch.__version__ and meta.seed == 0


def test_atomically_written_files_get_the_usual_mode(saved):
    """Checkpoints and sidecars are as readable as any file the user creates (umask), not 0600."""
    import os

    _, path = saved
    umask = os.umask(0)
    os.umask(umask)
    for f in (path, checkpoints.sidecar_path(path)):
        assert f.stat().st_mode & 0o777 == 0o666 & ~umask


def test_missing_sidecar(saved):
    _, path = saved
    checkpoints.sidecar_path(path).unlink()
    with pytest.raises(LewcError, match="sidecar .* is missing"):
        checkpoints.load(path)


def test_hash_mismatch(saved):
    _, path = saved
    raw = bytearray(path.read_bytes())
    raw[-5] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(LewcError, match="sha256"):
        checkpoints.load(path)


def test_truncated_file_even_with_a_matching_hash(saved):
    _, path = saved
    path.write_bytes(path.read_bytes()[:100])
    edit_sidecar(path, sha256=checkpoints.sha256_file(path))
    with pytest.raises(LewcError, match="cannot be read"):
        checkpoints.load(path)


def test_shape_mismatch(saved):
    _, path = saved
    edit_sidecar(path, width=2)
    with pytest.raises(LewcError, match="shape"):
        checkpoints.load(path)


def test_unknown_model(saved):
    _, path = saved
    edit_sidecar(path, model="transformer")
    with pytest.raises(LewcError, match="unknown model"):
        checkpoints.load(path)


def test_nan_weights_are_refused_on_save(tmp_path):
    model = build("mlp", 1, 10, (3, 16, 16))
    with torch.no_grad():
        model.head.weight[0, 0] = float("nan")
    meta = META | {"model": "mlp", "norm": "none", "base_width": 32, "depth": 3}
    with pytest.raises(LewcError, match="non-finite"):
        checkpoints.save(model, tmp_path / "nan", checkpoints.CheckpointMeta.record(**meta))
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    "changes",
    [
        {"width": "abc"},
        {"in_shape": None},
        {"depth": "3"},
        {"seed": None},
        {"train_config": {"model": "mlp", "bogus": 1}},
    ],
)
def test_malformed_sidecars_are_one_line_errors(saved, changes):
    _, path = saved
    if changes.get("seed", 0) is None:
        meta = json.loads(checkpoints.sidecar_path(path).read_text())
        meta.pop("seed", None)
        checkpoints.sidecar_path(path).write_text(json.dumps(meta))
    else:
        edit_sidecar(path, **changes)
    with pytest.raises(LewcError):
        checkpoints.load(path)


def test_a_sidecar_written_the_old_way_reads_as_a_typed_record_and_writes_back_unchanged(saved):
    """The sidecar's format on disk is unchanged: a plain JSON object as earlier versions wrote it (an
    unknown extra field included) is read into ``CheckpointMeta``, whose ``to_dict`` is that object exactly."""
    _, path = saved
    side = checkpoints.sidecar_path(path)
    old = json.loads(side.read_text()) | {"a_later_field": [1, 2]}  # later versions may add fields
    side.write_text(json.dumps(old, indent=2) + "\n")
    record = checkpoints.read_checkpoint_meta(path)
    assert record.model == "vgg11" and record.width == 1 and record.depth is None and record.in_shape == [3, 16, 16]
    assert record.sha256 == old["sha256"] == checkpoints.load(path)[1].sha256
    assert record.extra == {"a_later_field": [1, 2]}
    assert record.to_dict() == old and list(record.to_dict()) == list(old)  # same fields, same order
    assert checkpoints.CheckpointMeta.from_dict(record.to_dict()) == record
    with pytest.raises(LewcError, match=r"^field 'width' must be in \[1, 4096\], got 0$"):
        checkpoints.CheckpointMeta.from_dict(old | {"width": 0})
    with pytest.raises(LewcError, match=r"^lacks field 'sha256'$"):
        checkpoints.CheckpointMeta.from_dict({k: v for k, v in old.items() if k != "sha256"})


def test_train_config_and_the_sidecar_share_one_set_of_limits():
    """Epochs, depth, widths: the recipe's TrainConfig, the sidecar's schema and ``build`` read one table."""
    from lewc.core.limits import LIMITS
    from lewc.training.recipe import default_config

    for key in ("width", "base_width", "depth", "epochs"):
        assert checkpoints.SIDECAR_FIELDS[key][1] is not None
        hi = LIMITS[key][1]
        over = {"width": 1, "base_width": 8, "depth": 3, "epochs": 1} | {key: hi + 1}
        with pytest.raises(LewcError, match=rf"must be in \[1, {hi}\], got {hi + 1}"):
            default_config("mlp", over["width"], "synthetic", 0, **{k: v for k, v in over.items() if k != "width"})
        for check in (checkpoints.SIDECAR_FIELDS[key][1], checkpoints.TRAIN_CONFIG_FIELDS[key]):
            with pytest.raises(LewcError, match=rf"must be in \[1, {hi}\], got {hi + 1}"):
                check(hi + 1, key)
            check(hi, key)


def test_a_derived_record_keeps_the_sidecars_field_order_and_appends_what_it_adds(saved):
    """``dataclasses.replace`` derives records (an aligned B, a control's endpoint): ``to_dict`` is the
    sidecar's object with the changed values in place and new fields after, as ``dict(meta, **new)`` was."""
    import dataclasses

    _, path = saved
    old = json.loads(checkpoints.sidecar_path(path).read_text())
    record = checkpoints.read_checkpoint_meta(path)
    derived = dataclasses.replace(record, width=2, alignment={"method": "weights"}, extra={"control": "positive"})
    assert derived.to_dict() == old | {"width": 2, "alignment": {"method": "weights"}, "control": "positive"}
    assert list(derived.to_dict()) == [*old, "alignment", "control"]
    built = checkpoints.CheckpointMeta.record(model="m", norm=None, cls="any name", width=1)
    assert built.to_dict() == {"model": "m", "norm": None, "cls": "any name", "width": 1}
    assert built.sha256 is None and built.schema is None
