"""The process supervisor: a child's output goes to its log; stop escalates only as far as needed."""

from __future__ import annotations

import signal
import sys

import pytest

from robot_compress.runtime import processes
from robot_compress.runtime.polling import wait_until

# Prints "ready" once its handlers are set, then waits; ignores the signals named in argv.
CHILD = """
import signal, sys, time
for name in sys.argv[1:]:
    signal.signal(getattr(signal, name), signal.SIG_IGN)
print("ready", flush=True)
time.sleep(60)
"""


def start(tmp_path, *ignored: str):
    log = tmp_path / f"child-{'-'.join(ignored) or 'plain'}.log"
    proc = processes.start([sys.executable, "-c", CHILD, *ignored], log)
    wait_until(lambda: "ready" in log.read_text(), 10, "the child to start")
    return proc


def test_sigint_is_enough_for_a_child_that_honours_it(tmp_path):
    proc = start(tmp_path)
    processes.stop(proc, grace_s=5.0)
    assert proc.returncode != 0 and proc.returncode != -signal.SIGKILL  # KeyboardInterrupt: exit code 1


def test_stop_escalates_to_sigterm_then_sigkill(tmp_path):
    term = start(tmp_path, "SIGINT")
    kill = start(tmp_path, "SIGINT", "SIGTERM")
    processes.stop([term, kill], grace_s=0.5)
    assert (term.returncode, kill.returncode) == (-signal.SIGTERM, -signal.SIGKILL)


def test_a_frozen_child_is_stopped_too(tmp_path):
    proc = start(tmp_path)
    processes.signal_group(proc, signal.SIGSTOP)
    processes.stop(proc, grace_s=5.0, signals=(signal.SIGTERM,))
    assert proc.returncode == -signal.SIGTERM


def test_wait_until_names_what_it_waited_for():
    with pytest.raises(TimeoutError, match="^timed out after 0.05 s waiting for godot: still not here$"):
        wait_until(lambda: False, 0.05, "godot", detail=lambda: "still not here")
    assert wait_until(lambda: 42, 0.05) == 42
