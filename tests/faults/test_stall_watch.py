"""StallWatch sees a stall it is made to suffer: the GIL held by a busy loop that the interpreter is
told not to interrupt keeps the watching thread from waking, as a stopped VM would."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from robot_compress.faults.stall_watch import StallWatch
from tests.conftest import REPO
from tests.faults.stalls import stall_this_process


def test_a_thread_kept_from_running_is_recorded_with_when_and_how_long():
    with StallWatch(threshold_ms=50.0) as watch:
        began = stall_this_process(0.3)
        time.sleep(0.05)
    assert any(began - 0.1 <= wall <= began + 0.05 and ms >= 200.0 for wall, ms in watch.stalls), watch.stalls
    assert watch.worst_ms >= 200.0


def test_the_watcher_stops_with_its_block():
    with StallWatch() as watch:
        time.sleep(0.02)
    assert not watch._thread.is_alive()


RERUN_POLICY_TESTS = '''
from pathlib import Path

from tests.conftest import rerun_after_a_stall
from tests.faults.stalls import stall_this_process

ATTEMPTS = Path(__file__).with_suffix(".attempts")


@rerun_after_a_stall
def test_fails_once_while_the_machine_stalls():
    attempt = len(ATTEMPTS.read_text()) if ATTEMPTS.exists() else 0
    ATTEMPTS.write_text("x" * (attempt + 1))
    if attempt == 0:
        stall_this_process(0.3)
        assert False, "a bound missed during a stall"


@rerun_after_a_stall
def test_fails_on_a_machine_that_runs():
    assert False, "a real bug"
'''


def test_only_a_failure_during_a_stall_is_run_again(tmp_path):
    """tests/conftest.py's `rerun_after_a_stall`, run by a real pytest: the stalled failure is rerun and
    passes, the failure without a stall is not rerun."""
    (tmp_path / "test_policy.py").write_text(RERUN_POLICY_TESTS)
    proc = subprocess.run([sys.executable, "-m", "pytest", "-p", "tests.conftest", "-p", "no:cacheprovider",
                           "-q", "-rA", "test_policy.py"], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    out = proc.stdout + proc.stderr
    tally = out.strip().splitlines()[-1]
    assert all(part in tally for part in ("1 failed", "1 passed", "1 rerun")), out
    assert "FAILED test_policy.py::test_fails_on_a_machine_that_runs" in out, out
    assert "test_fails_once_while_the_machine_stalls failed while this machine stalled" in out, out
