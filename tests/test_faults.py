"""Fault injection: SIGKILL at random moments, a full disk, concurrent runs into one folder, Ctrl-C while
publishing, a killed writer's temporary.

The slow ones run ``python -m lewc.verify`` in a real subprocess; afterwards every published folder must
be complete (report.json beside a readable results.nc), a rerun must succeed, and ``paper_figs`` must
only see complete runs. The temporaries lewc makes beside a user's files are plainly lewc's
(``.lewc-tmp-…-pid<N>@<host>-…``), gone on every exit path, and a killed owner's are swept by the next
write into the folder while a live owner's are kept.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lewc.commands.figs import collect_results
from lewc.core.io import OWNER, TMP_PREFIX, owner_tag, write_json_atomic
from lewc.reporting.report import REPORT_SCHEMA
from lewc.reporting.results import open_results


def verify_cmd(pair, out=None):
    cmd = [sys.executable, "-m", "lewc.verify", "--ckpt-a", str(pair[0]), "--ckpt-b", str(pair[1])]
    cmd += ["--lams", "0,0.25,0.5,0.75,1", "--n-test", "300", "--quiet"]
    return cmd + (["--out", str(out)] if out else [])


def env_for(home: Path) -> dict:
    return dict(os.environ, LEWC_DATA=str(home), OMP_NUM_THREADS="1")


def assert_only_complete_runs(results: Path) -> None:
    for nc in collect_results(results):
        report = json.loads((nc.parent / "report.json").read_text())
        assert report["schema"] == REPORT_SCHEMA
        assert open_results(nc).sizes["lam"] == len(report["lams"])


@pytest.mark.slow
@settings(max_examples=3, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(delay=st.floats(0.5, 9.0))
def test_sigkill_at_any_moment_then_rerun_and_paper_figs(delay, trained_pair, tmp_path_factory):
    home = tmp_path_factory.mktemp("kill")
    proc = subprocess.Popen(verify_cmd(trained_pair), env=env_for(home), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    results = home / "results"
    if results.exists():
        assert_only_complete_runs(results)
    again = subprocess.run(verify_cmd(trained_pair) + ["--force"], env=env_for(home), capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    assert len(collect_results(results)) == 1
    assert_only_complete_runs(results)
    assert not [p for p in results.rglob("*") if p.name.startswith((TMP_PREFIX, ".tmp"))]  # the killed run's swept
    figs = subprocess.run(
        [sys.executable, "-m", "lewc.commands.figs", "--out", str(home / "figs")],
        env=env_for(home),
        capture_output=True,
        text=True,
    )
    assert figs.returncode == 0, figs.stderr


@pytest.mark.slow
def test_a_full_disk_is_one_line_exit_2_and_publishes_nothing(trained_pair, tmp_path):
    cmd = " ".join(f"'{c}'" for c in verify_cmd(trained_pair, tmp_path / "out"))
    proc = subprocess.run(
        ["bash", "-c", f"ulimit -f 64; exec {cmd}"], env=env_for(tmp_path), capture_output=True, text=True
    )
    assert proc.returncode == 2, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "cannot write" in proc.stderr, proc.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_two_concurrent_runs_into_one_folder_leave_one_complete_run(trained_pair, tmp_path):
    out = tmp_path / "out"
    procs = [
        subprocess.Popen(
            verify_cmd(trained_pair, out), env=env_for(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        for _ in range(2)
    ]
    codes = [p.wait(timeout=600) for p in procs]
    assert codes == [0, 0], [p.stderr.read() for p in procs]
    assert (out / "report.json").is_file() and open_results(out / "results.nc").sizes["lam"] == 5
    assert not [p for p in tmp_path.iterdir() if p.name.startswith((TMP_PREFIX, ".tmp"))]


@pytest.mark.parametrize("module", ["lewc.verify", "lewc.commands.train", "lewc.commands.figs"])
def test_ctrl_c_while_importing_is_one_line(module, tmp_path):
    """SIGINT while the command's heavy imports run: one line, exit 130, no traceback.

    ``-X importtime`` reports each import as it finishes, so the signal is sent right after numpy is
    in — after lewc's handler exists and before torch has finished — however fast the machine is.
    """
    proc = subprocess.Popen(
        [sys.executable, "-X", "importtime", "-m", module, "--help"],
        env=env_for(tmp_path),
        # a shell's background job inherits SIGINT ignored; a user's terminal gives it the default
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    seen_lewc = False
    for line in proc.stderr:
        seen_lewc = seen_lewc or "lewc.core.errors" in line
        if seen_lewc and line.split("|")[-1].strip() == "numpy":
            break
    proc.send_signal(signal.SIGINT)
    _, rest = proc.communicate(timeout=60)
    err = [x for x in rest.splitlines() if not x.startswith("import time:")]
    assert proc.returncode == 130, err
    assert len(err) == 1 and err[0].startswith("interrupted") and "Traceback" not in rest


# --- the temporaries beside a user's files ----------------------------------------------------------------


@pytest.fixture(scope="module")
def api_report():
    """One small analysis (the API's notebook model), to publish again and again."""
    import torch
    from test_api import Net, fit, make_data

    import lewc

    train, test = make_data(600, 0), make_data(200, 1)
    torch.manual_seed(0)
    a = fit(Net(), train, 0, 3)
    torch.manual_seed(1)
    b = fit(Net(), train, 1, 3)
    return lewc.verify_pair(a, b, train=train, test=test, lams=(0, 0.5, 1), align="none", controls=False)


def test_publishing_leaves_beside_out_only_lewcs_named_temps_gone_on_every_exit_path(api_report, tmp_path, monkeypatch):
    import lewc.pipeline.folders as folders
    import lewc.pipeline.pair as pair

    parent = tmp_path / "user"
    parent.mkdir()
    (parent / "notes.txt").write_text("the user's own")
    out = parent / "out"
    seen: list[set[str]] = []
    real_publish = folders.publish

    def spy(tmp, final):
        seen.append({p.name for p in parent.iterdir()})
        real_publish(tmp, final)

    monkeypatch.setattr(pair, "publish", spy)
    api_report.save(out)
    api_report.save(out)  # over a previous run: the old folder is swapped out, then removed
    extra = set().union(*seen) - {"notes.txt", "out"}
    assert extra and all(n.startswith(TMP_PREFIX) and owner_tag() in n for n in extra), extra
    assert {p.name for p in parent.iterdir()} == {"notes.txt", "out"}
    before = (out / "report.json").read_bytes()

    def interrupted(*args, **kwargs):  # Ctrl-C while the figures are drawn
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(pair.report, "markdown", interrupted)
        with pytest.raises(KeyboardInterrupt):
            api_report.save(out)
    assert {p.name for p in parent.iterdir()} == {"notes.txt", "out"}
    real_replace = os.replace

    def replace(src, dst):  # Ctrl-C between the swap's two renames: the old folder comes back
        if Path(dst) == out and "-old-" not in Path(src).name:
            raise KeyboardInterrupt
        real_replace(src, dst)

    with monkeypatch.context() as m:
        m.setattr(folders.os, "replace", replace)
        with pytest.raises(KeyboardInterrupt):
            api_report.save(out)
    assert {p.name for p in parent.iterdir()} == {"notes.txt", "out"}
    assert (out / "report.json").read_bytes() == before and (out / "results.nc").is_file()


WRITER = """
import os, signal, sys
from lewc.core.io import atomic_path
with atomic_path(sys.argv[1]) as tmp:
    tmp.write_text("half written")
    print(tmp, flush=True)
    if sys.argv[2] == "die":
        os.kill(os.getpid(), signal.SIGKILL)
    sys.stdin.read()  # alive until told
    tmp.write_text("done")
"""


def test_a_killed_writers_temps_are_swept_by_the_next_write_and_a_live_writers_kept(tmp_path):
    import socket

    folder = tmp_path / "ckpt"
    folder.mkdir()
    killed = subprocess.run(
        [sys.executable, "-c", WRITER, str(folder / "a.safetensors"), "die"], capture_output=True, text=True
    )
    assert killed.returncode == -signal.SIGKILL
    killed_tmp = Path(killed.stdout.strip())
    assert killed_tmp.parent == folder and killed_tmp.exists()  # what a SIGKILL leaves
    owner = OWNER.search(killed_tmp.name)
    assert killed_tmp.name.startswith(TMP_PREFIX) and owner and owner["host"] == socket.gethostname()
    dead_tag = f"pid{owner['pid']}@{owner['host']}"
    # a killed verify's private folder, with a temporary of its own inside, and a user's old dot file
    private = folder / f"{TMP_PREFIX}results-{dead_tag}-abc123"
    private.mkdir()
    (private / f"{TMP_PREFIX}results.nc-{dead_tag}-def456").write_text("half")
    users = folder / ".tmp-notes"
    users.write_text("not lewc's")
    os.utime(users, (time.time() - 3 * 86400,) * 2)
    live = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(folder / "b.safetensors"), "live"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        live_tmp = Path(live.stdout.readline().strip())
        write_json_atomic(folder / "a.json", {"next": "run"})  # the next write into the folder sweeps
        left = {p.relative_to(folder).as_posix() for p in folder.rglob("*")}
        assert left == {"a.json", ".tmp-notes", live_tmp.name}, left
        assert not [p for p in folder.rglob("*") if dead_tag in p.name]
    finally:
        live.communicate("", timeout=60)
    assert live.returncode == 0 and (folder / "b.safetensors").read_text() == "done"
    assert {p.name for p in folder.iterdir()} == {"a.json", "b.safetensors", ".tmp-notes"}
