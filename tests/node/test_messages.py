"""What the node publishes, built from router results: the JSON result and the diagnostics status."""

from __future__ import annotations

import json

import numpy as np
import pytest
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticStatus
from std_msgs.msg import Header

from robot_compress.ros import messages
from robot_compress.runtime.classification import predictions
from robot_compress.runtime.router import Router, RouteResult, RouterState
from tests.runtime.doubles import SlowLocal


def test_json_result_carries_the_frame_and_routing_facts():
    header = Header(stamp=Time(sec=5, nanosec=7), frame_id="cam")
    logits = np.eye(10, dtype=np.float32)[[3]] * 4
    result = RouteResult(4, header, "local", RouterState.LOCAL, logits, 12.5, 2.0, edge_failure="timeout",
                         answered_at=1700000000.25)
    (prediction,) = predictions(logits, [f"c{i}" for i in range(10)], k=2)
    record = json.loads(messages.json_message(messages.result_record(result, header, prediction,
                                                                     received_at=1700000000.2)).data)
    assert record["stamp"] == {"sec": 5, "nanosec": 7} and record["frame_id"] == "cam"
    assert (record["backend"], record["state"], record["edge_failure"], record["label"]) == \
        ("local", "local", "timeout", "c3")
    assert record["latency_ms"] == 12.5 and len(record["top_k"]) == 2
    assert (record["received_at"], record["answered_at"]) == (1700000000.2, 1700000000.25)

    msg = messages.classification_message(result, header, prediction, received_at=1700000000.2)
    assert isinstance(msg, messages.CLASSIFICATION_TYPE)
    if messages.HAVE_VISION_MSGS:
        assert msg.header.frame_id == "cam" and [h.class_id for h in msg.results] == ["c3", prediction.top_k[1][0]]
    else:  # the String form is that same JSON record
        assert json.loads(msg.data) == record


def local_router_stats():
    """A fresh local-only router's stats: what diagnostics report before any frame."""
    router = Router(SlowLocal())
    try:
        return router.stats()
    finally:
        router.close()


def test_diagnostics_warn_while_the_edge_is_configured_but_unused():
    stats = local_router_stats()
    counters = {"frames_in": 3, "frames_out": 2, "frames_dropped": 1, "bad_input": 0}
    degraded = messages.diagnostics_message(Time(sec=1), stats, counters, True, "/perception_node")
    local_only = messages.diagnostics_message(Time(sec=1), stats, counters, False, "/perception_node")
    assert degraded.status[0].level == DiagnosticStatus.WARN
    assert local_only.status[0].level == DiagnosticStatus.OK
    values = {kv.key: kv.value for kv in degraded.status[0].values}
    assert (values["state"], values["frames_dropped"], values["state_reason"]) == ("local", "1", "no_edge")
    assert {"edge_rtt_p50_ms", "edge_rtt_p99_ms", "local_latency_p99_ms", "failovers", "bad_input"} <= set(values)


def test_diagnostics_warn_while_the_node_falls_behind_the_camera():
    stats = local_router_stats()
    counters = {"frames_in": 30, "frames_out": 22, "frames_dropped": 8, "bad_input": 0}
    behind = messages.diagnostics_message(Time(sec=1), stats, counters, False, "/perception_node",
                                          recently_dropped=3).status[0]
    caught_up = messages.diagnostics_message(Time(sec=2), stats, counters, False, "/perception_node",
                                             recently_dropped=0).status[0]
    assert behind.level == DiagnosticStatus.WARN and "falling behind the camera: 3 frames dropped" in behind.message
    assert {kv.key: kv.value for kv in behind.values}["frames_dropped_recent"] == "3"
    assert caught_up.level == DiagnosticStatus.OK  # the total stays 8, only new drops warn


@pytest.mark.parametrize("received, missing, warns", [
    (14, 1, False),  # one frame: a tick the camera skipped itself looks the same from stamps
    (60, 2, False),  # 3%: estimate noise
    (28, 2, True),
    (8, 7, True),  # Fast DDS' default settings with camera-sized frames
])
def test_diagnostics_warn_when_camera_frames_are_lost_in_transport(received, missing, warns):
    stats = local_router_stats()
    counters = {"frames_in": 100, "frames_out": 100, "frames_dropped": 0, "bad_input": 0}
    status = messages.diagnostics_message(Time(sec=1), stats, counters, False, "/perception_node",
                                          recent_transport=(received, missing)).status[0]
    assert (status.level == DiagnosticStatus.WARN) == warns, status.message
    assert ("lost in transport" in status.message) == warns
    assert {kv.key: kv.value for kv in status.values}["frames_missing_in_transport_recent"] == str(missing)


def test_diagnostics_say_error_when_a_thread_has_stopped():
    stats = local_router_stats()
    counters = {"frames_in": 0, "frames_out": 0, "frames_dropped": 0, "bad_input": 0}
    status = messages.diagnostics_message(Time(sec=1), stats, counters, False, "/perception_node",
                                          stopped_threads=["prober"]).status[0]
    assert status.level == DiagnosticStatus.ERROR and status.message.startswith("thread stopped: prober")
    assert {kv.key: kv.value for kv in status.values}["stopped_threads"] == "prober"


def test_diagnostics_warn_about_failed_answers_only_while_they_are_recent():
    from robot_compress.runtime.router import RECENT_RESULTS

    local = SlowLocal(delay_s=0.0, fail=True)
    router = Router(local)
    counters = {"frames_in": 0, "frames_out": 0, "frames_dropped": 0, "bad_input": 0}

    def status():
        return messages.diagnostics_message(Time(sec=1), router.stats(), counters, False, "/perception_node").status[0]

    try:
        router.classify(np.zeros((1, 3, 32, 32), np.float32))
        local.fail = False
        after_failure = status()
        for _ in range(RECENT_RESULTS - 1):
            router.classify(np.zeros((1, 3, 32, 32), np.float32))
        still_recent = status().level
        router.classify(np.zeros((1, 3, 32, 32), np.float32))
        later = status()
    finally:
        router.close()
    values = {kv.key: kv.value for kv in later.values}
    assert (after_failure.level, still_recent, later.level) == (DiagnosticStatus.WARN, DiagnosticStatus.WARN,
                                                                DiagnosticStatus.OK)
    assert (values["answers_failed"], values["answers_failed_recent"]) == ("1", "0")
