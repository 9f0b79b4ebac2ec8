"""Where a library replaced hand-written code: flock/filelock (publish), psutil (process trees), FLOPs."""

import subprocess
import threading
import time

import psutil
import pytest
import torch

from lewc.models import build
from lewc.pipeline.folders import LOCK_NAME, publish
from lewc.training.checkpoints import count_flops_per_image


def test_concurrent_publishes_leave_one_complete_folder_and_no_lock_file(tmp_path):
    final = tmp_path / "results" / "pair_a1"
    final.parent.mkdir()

    def one(i: int) -> None:
        tmp = final.parent / f".tmp-{i}"
        tmp.mkdir()
        (tmp / "report.json").write_text(str(i))
        (tmp / "results.nc").write_text(str(i))
        publish(tmp, final)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(p.name for p in final.parent.iterdir()) == ["pair_a1"]  # flock on the folder: no lock file
    assert LOCK_NAME not in {p.name for p in tmp_path.rglob("*")}
    winner = (final / "report.json").read_text()
    assert (final / "results.nc").read_text() == winner  # never a mix of two runs


def test_terminate_tree_stops_a_job_and_its_grandchildren():
    from lewc.commands.study import _terminate_tree

    proc = subprocess.Popen(["sh", "-c", "sleep 60 & sleep 60 & wait"])
    deadline = time.time() + 10
    while len(psutil.Process(proc.pid).children()) < 2 and time.time() < deadline:
        time.sleep(0.05)
    children = [c.pid for c in psutil.Process(proc.pid).children(recursive=True)]
    assert len(children) == 2
    _terminate_tree(proc.pid, grace_s=2.0)
    assert proc.wait(timeout=5) is not None
    assert not [pid for pid in children if psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie"]


def _hand_count(model, in_shape) -> float:
    """The former counter (forward hooks on Conv2d/Linear), kept as the oracle."""
    flops = 0.0

    def hook(mod, inp, out):
        nonlocal flops
        if isinstance(mod, torch.nn.Conv2d):
            flops += 2.0 * out.shape[-1] * out.shape[-2] * mod.weight.numel()
        else:
            flops += 2.0 * mod.weight.numel()

    hooks = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, torch.nn.Conv2d | torch.nn.Linear)]
    with torch.no_grad():
        model.eval()(torch.zeros(1, *in_shape, device=next(model.parameters()).device))
    for h in hooks:
        h.remove()
    return flops


@pytest.mark.parametrize(
    "family, width, shape",
    [("mlp", 1, (1, 28, 28)), ("mlp", 16, (1, 28, 28)), ("vgg11", 2, (3, 32, 32)), ("resnet20", 4, (3, 32, 32))],
)
def test_flop_counter_matches_the_hand_count_on_the_meta_device(family, width, shape):
    with torch.device("meta"):
        model = build(family, width, 10, shape)
    flops = count_flops_per_image(model, shape)
    assert flops == _hand_count(model, shape) and flops > 0
    if family == "mlp":  # closed form: 2 × weights of the Linear layers
        weights = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
        assert flops == 2 * weights
