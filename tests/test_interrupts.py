"""Ctrl-C during a netCDF write ends the process at once with 130 and publishes nothing.

Before ``lewc.core.interrupts`` a SIGINT landing inside xarray's lock bookkeeping left its netCDF
lock held, and ``to_netcdf``'s own ``close`` then waited on it forever (3 of 6 tries hung here).
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lewc.core.interrupts import deferred_interrupts

ROOT = Path(__file__).resolve().parents[1]
WRITER = """
import sys, numpy as np, xarray as xr
from pathlib import Path
from lewc.core.errors import cli_main
from lewc.reporting.results import write_netcdf
ds = xr.Dataset({f"v{i}": (("a", "b"), np.random.default_rng(i).normal(size=(50, 200))) for i in range(60)})
@cli_main
def main(argv=None):
    print("writing", flush=True)
    for k in range(1000):  # many writes, each many lock round trips: the signal lands inside one
        write_netcdf(ds, Path(sys.argv[1]) / f"results{k}.nc")
main()
"""


@settings(max_examples=3, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(delay=st.floats(0.1, 1.5))
def test_sigint_during_netcdf_writes_exits_130_within_seconds(delay, tmp_path_factory):
    from lewc.reporting.results import open_results

    folder = tmp_path_factory.mktemp("nc")
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(folder)],
        env=env,
        cwd=ROOT,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout.readline().strip() == "writing"
    time.sleep(delay)
    sent = time.monotonic()
    proc.send_signal(signal.SIGINT)
    try:
        _, err = proc.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise AssertionError("the process hung after SIGINT during a netCDF write") from None
    assert time.monotonic() - sent < 10
    assert proc.returncode == 130, err
    assert err.strip().splitlines() == ["interrupted: finished files are kept, rerun the same command to resume"]
    written = sorted(folder.iterdir())
    assert all(p.name.startswith("results") for p in written), written  # no temporary left behind
    for path in written:  # every published file is complete
        assert open_results(path).sizes == {"a": 50, "b": 200}


def test_deferred_interrupt_is_delivered_after_the_block():
    # Python's own SIGINT handler, whatever this process inherited: a shell starts background jobs
    # (`make test &`) with SIGINT ignored, and Python then installs no handler to defer
    inherited = signal.signal(signal.SIGINT, signal.default_int_handler)
    ran_to_end = []
    try:
        try:
            with deferred_interrupts():
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(0.05)  # the handler has run by now: it only recorded the signal
                ran_to_end.append(True)
        except KeyboardInterrupt:
            assert ran_to_end == [True]
        else:
            raise AssertionError("the deferred SIGINT was swallowed")
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, inherited)
