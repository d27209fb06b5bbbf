"""The namespace harness makes each fault real (as a TCP client in the robot namespace sees it)
and leaves nothing behind, even when a test fails or its process is killed."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from robot_compress.faults.netns import EDGE_IP, NetTestbed, cleanup_stale, list_namespaces
from tests.conftest import rerun_after_a_stall

# Resets and refusals must arrive within 0.1 s and the flapping schedule within 0.15 s: bounds a
# whole-machine stall breaks whatever the harness does (tests/conftest.py's rerun policy).
pytestmark = [pytest.mark.root, rerun_after_a_stall]

TOOL = str(Path(__file__).with_name("tcp_tool.py"))
PORT = 7000
PROBE_TIMEOUT_S = 0.5


class Prober:
    """A TCP client living in the robot namespace; `ask("new"|"old")` -> (outcome, seconds)."""

    def __init__(self, bed: NetTestbed):
        self.proc = bed.popen("robot", [sys.executable, TOOL, "probe", EDGE_IP, str(PORT), str(PROBE_TIMEOUT_S)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def ask(self, which: str = "new") -> tuple[str, float]:
        self.proc.stdin.write(which + "\n")
        self.proc.stdin.flush()
        reply = json.loads(self.proc.stdout.readline())
        return reply["outcome"], reply["elapsed_s"]


def start_echo(bed: NetTestbed) -> subprocess.Popen:
    proc = bed.popen("edge", [sys.executable, TOOL, "serve", EDGE_IP, str(PORT)], stdout=subprocess.PIPE,
                     text=True)
    assert proc.stdout.readline().strip() == "ready"
    return proc


@pytest.fixture
def echo(bed) -> subprocess.Popen:
    return start_echo(bed)


@pytest.fixture
def prober(bed, echo) -> Prober:
    p = Prober(bed)
    assert p.ask("new")[0] == "ok"
    return p


def test_drop_is_silent_until_cleared(bed, prober):
    bed.drop()
    assert "-j DROP" in bed.rules()
    for which in ("old", "new"):
        outcome, elapsed = prober.ask(which)
        assert outcome == "timeout" and elapsed >= PROBE_TIMEOUT_S
    bed.clear()
    assert "-j" not in bed.rules()
    assert prober.ask("new")[0] == "ok"


def test_reject_resets_open_connections_and_refuses_new_ones_at_once(bed, prober):
    bed.reject()
    outcome, elapsed = prober.ask("old")
    assert (outcome, elapsed < 0.1) == ("reset", True)
    outcome, elapsed = prober.ask("new")
    assert (outcome, elapsed < 0.1) == ("refused", True)
    bed.clear()
    assert prober.ask("new")[0] == "ok"


def test_link_down_stalls_open_connections_and_new_ones_find_no_route(bed, prober):
    bed.set_link(False)
    assert not bed.link_is_up()
    assert prober.ask("old")[0] == "timeout"
    outcome, elapsed = prober.ask("new")
    assert (outcome, elapsed < 0.1) == ("unreachable", True)
    bed.set_link(True)
    assert bed.link_is_up()
    assert prober.ask("new")[0] == "ok"


def test_frozen_edge_is_a_black_hole_and_a_killed_one_refuses(bed, echo, prober):
    bed.freeze(echo)
    for which in ("old", "new"):  # the kernel still completes handshakes: no RST, no FIN
        assert prober.ask(which)[0] == "timeout"
    bed.thaw(echo)
    assert prober.ask("new")[0] == "ok"
    bed.kill(echo)
    assert echo.returncode == -9
    assert prober.ask("new")[0] == "refused"
    start_echo(bed)
    assert prober.ask("new")[0] == "ok"
    assert [e.action for e in bed.events[1:]] == ["freeze", "thaw", "kill"]


def test_flapping_follows_the_schedule_and_ends_with_the_link_up(bed, prober):
    flapper = bed.flap([0.3, 0.2, 0.3, 0.2])
    time.sleep(0.1)
    assert not bed.link_is_up()
    flapper.join(timeout=5)
    assert bed.link_is_up()
    events = [e for e in bed.events if e.action.startswith("link")]
    assert [e.action for e in events] == ["link_down", "link_up", "link_down", "link_up", "link_up"]
    gaps = [b.t - a.t for a, b in zip(events[:3], events[1:4], strict=True)]
    assert all(p - 0.02 <= g <= p + 0.15 for g, p in zip(gaps, [0.3, 0.2, 0.3], strict=True)), gaps
    assert prober.ask("new")[0] == "ok"


def test_everything_is_removed_when_the_test_body_fails():
    with pytest.raises(RuntimeError, match="boom"), NetTestbed() as bed:
        names = (bed.robot_ns, bed.edge_ns)
        sleeper = bed.popen("edge", ["sleep", "60"])
        bed.freeze(sleeper)
        bed.drop()
        raise RuntimeError("boom")
    assert sleeper.poll() is not None
    assert not set(names) & set(list_namespaces())


CREATE_AND_STAY = ("import sys, time; from robot_compress.faults.netns import NetTestbed; "
                   "bed = NetTestbed().__enter__(); bed.popen('edge', ['sleep', '60']); "
                   "print(bed.robot_ns, bed.edge_ns, flush=True); {end}")


@pytest.mark.parametrize("how", ["exits without closing", "is killed"])
def test_a_run_that_does_not_close_its_testbed_leaves_nothing_behind(how):
    end = "sys.exit(0)" if how == "exits without closing" else "time.sleep(60)"
    proc = subprocess.Popen([sys.executable, "-c", CREATE_AND_STAY.format(end=end)], stdout=subprocess.PIPE,
                            text=True)
    names = set(proc.stdout.readline().split())
    assert len(names) == 2
    if how == "is killed":
        proc.kill()
        proc.wait(timeout=5)
        assert names <= set(list_namespaces())  # SIGKILL: no atexit, so the next run cleans up
        assert names <= set(cleanup_stale())
    else:
        assert proc.wait(timeout=10) == 0  # atexit closed it
    assert not names & set(list_namespaces())
