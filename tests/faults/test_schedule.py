"""A scripted link changes the proxy at the scheduled times and always ends on a working link."""

from __future__ import annotations

import socket
import time

import pytest

from robot_compress.faults.proxy import FaultProxy
from robot_compress.faults.schedule import LinkChange, ScheduledLink, blackhole_then_flap


def test_changes_take_effect_on_time_and_the_link_ends_up_working(echo_server):
    with FaultProxy(echo_server.address) as proxy, socket.create_connection(proxy.address, timeout=2) as sock:
        start = time.time()
        link = ScheduledLink(proxy, [LinkChange(0.2, "blackhole"), LinkChange(0.7, "pass", {"latency_ms": 50})])
        link.start()
        time.sleep(0.3)
        sock.settimeout(0.2)
        sock.sendall(b"x")
        with pytest.raises(TimeoutError):
            sock.recv(1)
        link.join(timeout=5)
        sock.settimeout(2)
        assert sock.recv(1) == b"x"
        offsets = [t - start for t, _ in link.applied]
        assert 0.2 <= offsets[0] <= 0.3 and 0.7 <= offsets[1] <= 0.8, offsets
        assert proxy.snapshot()["state"]["up"]["latency_ms"] == 50


def test_stopping_early_restores_the_link(echo_server):
    with FaultProxy(echo_server.address) as proxy:
        link = ScheduledLink(proxy, [LinkChange(0.0, "down"), LinkChange(60.0, "pass")]).start()
        time.sleep(0.2)
        assert proxy.snapshot()["state"]["mode"] == "down"
        link.stop()
        assert proxy.snapshot()["state"]["mode"] == "pass"


def test_the_demo_script_alternates_within_its_bounds_and_ends_on_pass():
    changes = blackhole_then_flap(start_s=5, blackhole_s=10, recover_s=5, flap_s=10, low_s=0.5, high_s=2.0)
    assert [c.mode for c in changes[:2]] == ["blackhole", "pass"] and changes[-1].mode == "pass"
    flap = changes[2:]
    assert flap[0].at_s == 20 and flap[-1].at_s <= 30
    assert all(0.5 <= b.at_s - a.at_s <= 2.0 for a, b in zip(flap[:-2], flap[1:-1], strict=True))
    assert all(a.mode != b.mode for a, b in zip(flap[:-1], flap[1:-1], strict=False))
    with pytest.raises(ValueError):
        LinkChange(1.0, "sideways")
