"""What the perception node publishes, built from router results and statistics.

`~/classification` is `vision_msgs/Classification` where vision_msgs is installed, else a
`std_msgs/String` holding JSON with the same fields plus the routing facts (backend, latency,
router state). With vision_msgs, the routing facts of each frame go to `~/route` as that JSON.
Detection models publish `~/detections` the same way: `vision_msgs/Detection2DArray`, else the
JSON with a `detections` list (box x1, y1, x2, y2 in the camera image's pixels, score, class).
Where the ROS install has no vision_msgs (the pip wheels), `make venv` compiles it and installs it
into .venv (robot_compress.ros.vision_msgs_build).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from std_msgs.msg import String

from robot_compress.runtime.classification import Prediction
from robot_compress.runtime.detection import Detection
from robot_compress.runtime.router import RouteResult, RouterEvent, RouterState, RouterStats
from robot_compress.runtime.transport_loss import loss_is_alarming

try:
    from vision_msgs.msg import (
        BoundingBox2D,
        Classification,
        Detection2D,
        Detection2DArray,
        ObjectHypothesis,
        ObjectHypothesisWithPose,
    )
except ImportError:
    Classification = ObjectHypothesis = Detection2DArray = Detection2D = BoundingBox2D = None
    ObjectHypothesisWithPose = None

HAVE_VISION_MSGS = Classification is not None
CLASSIFICATION_TYPE = Classification if HAVE_VISION_MSGS else String
DETECTION_TYPE = Detection2DArray if HAVE_VISION_MSGS else String
# Where listeners (recorder, tests, benchmarks) read each frame's JSON result: ~/classification is
# typed where vision_msgs is installed, and the JSON then goes to ~/route.
RESULT_JSON_TOPIC = "route" if HAVE_VISION_MSGS else "classification"
DETECTION_JSON_TOPIC = "route" if HAVE_VISION_MSGS else "detections"  # the same for a detection model
# sim_world's ground truth: `sim/ground_truth` is typed where vision_msgs is installed, and the JSON
# (with the pose, the picture's label in cifar10 mode, ...) then goes to `sim/ground_truth_json`.
WORLD_TRUTH_TOPIC = "sim/ground_truth"
WORLD_TRUTH_JSON_TOPIC = "sim/ground_truth_json" if HAVE_VISION_MSGS else WORLD_TRUTH_TOPIC


def result_record(result: RouteResult, header, prediction: Prediction | None,
                  received_at: float | None = None) -> dict[str, Any]:
    """The JSON form of one frame's result (the std_msgs/String payload). `received_at` is the
    wall clock when the node's subscription got the frame: from there on the time is the robot's."""
    record: dict[str, Any] = {
        "stamp": {"sec": header.stamp.sec, "nanosec": header.stamp.nanosec},
        "frame_id": header.frame_id,
        "seq": result.seq,
        "backend": result.backend,
        "state": result.state.value,
        "latency_ms": round(result.latency_ms, 3),
        "inference_ms": round(result.inference_ms, 3),
        "edge_failure": result.edge_failure,
        "hedged": result.hedged,
        "error": result.error,
        "received_at": received_at,
        "answered_at": result.answered_at,
    }
    if prediction is not None:
        record.update(class_id=prediction.class_id, label=prediction.label, score=prediction.score,
                      top_k=[[label, score] for label, score in prediction.top_k])
    return record


def detection_record(result: RouteResult, header, detections: list[Detection] | None,
                     received_at: float | None = None) -> dict[str, Any]:
    """The JSON form of one detection frame: the routing facts of `result_record` plus
    `detections` (empty list when the frame got no answer: `backend` is then 'none')."""
    record = result_record(result, header, None, received_at)
    record["detections"] = [d.to_json() for d in detections or ()]
    return record


def detections_message(result: RouteResult, header, detections: list[Detection] | None,
                       received_at: float | None = None):
    """The `~/detections` message for one result, in whichever type this robot has. Typed: one
    Detection2D per box, centre and size in the image's pixels, the label as class_id."""
    if not HAVE_VISION_MSGS:
        return json_message(detection_record(result, header, detections, received_at))
    msg = Detection2DArray()
    msg.header = header
    for d in detections or ():
        item = Detection2D()
        item.header = header
        hypothesis = ObjectHypothesisWithPose()
        hypothesis.hypothesis.class_id = d.label
        hypothesis.hypothesis.score = float(d.score)
        item.results = [hypothesis]
        box = BoundingBox2D()
        box.center.position.x, box.center.position.y = (d.x1 + d.x2) / 2.0, (d.y1 + d.y2) / 2.0
        box.size_x, box.size_y = float(d.x2 - d.x1), float(d.y2 - d.y1)
        item.bbox = box
        msg.detections.append(item)
    return msg


def json_message(record: dict[str, Any]) -> String:
    return String(data=json.dumps(record, separators=(",", ":")))


def event_message(event: RouterEvent) -> String:
    """One router state change for `~/events`: when, from what, to what, and why."""
    return json_message({"t": event.time, "previous": event.previous.value if event.previous else None,
                         "state": event.state.value, "reason": event.reason, "detail": event.detail})


def classification_message(result: RouteResult, header, prediction: Prediction | None,
                           received_at: float | None = None):
    """The `~/classification` message for one result, in whichever type this robot has."""
    if not HAVE_VISION_MSGS:
        return json_message(result_record(result, header, prediction, received_at))
    msg = Classification()
    msg.header = header
    if prediction is not None:
        msg.results = [ObjectHypothesis(class_id=label, score=float(score)) for label, score in prediction.top_k]
    return msg


def _ms(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}"


def diagnostics_message(stamp, stats: RouterStats, counters: dict[str, int], edge_configured: bool,
                        hardware_id: str, stopped_threads: Sequence[str] = (),
                        recently_dropped: int = 0, recent_transport: tuple[int, int] = (0, 0)) -> DiagnosticArray:
    """One DiagnosticStatus for the router: ERROR when one of the node's threads (`stopped_threads`)
    has ended, WARN while the edge is configured but not in use, while a recent frame got no answer,
    when the node's frame queue dropped frames since the last report (`recently_dropped`: frames
    arrive faster than the node answers them, e.g. a CPU shared with other work; the newest frame
    wins, so results stay current but some frames get none), or when the frames estimated lost
    before they reached the node in the last few seconds (`recent_transport`: received, missing;
    TransportMonitor.recent) pass `transport_loss.loss_is_alarming` (the node's log names the
    likely cause and the fix)."""
    received, missing = recent_transport
    lossy_transport = loss_is_alarming(received, missing)
    degraded = edge_configured and stats.state is not RouterState.EDGE
    warn = degraded or stats.recent_answers.get("none") or recently_dropped > 0 or lossy_transport
    level = DiagnosticStatus.WARN if warn else DiagnosticStatus.OK
    reason = stats.last_event.reason if stats.last_event else ""
    message = f"{stats.state.value} ({reason})"
    if recently_dropped:
        message += f"; falling behind the camera: {recently_dropped} frames dropped since the last report"
    if lossy_transport:
        message += (f"; camera frames lost in transport: {missing} of {received + missing} recently "
                    "(see the node's log for the fix)")
    if stopped_threads:
        level = DiagnosticStatus.ERROR
        message = f"thread stopped: {', '.join(stopped_threads)}; {message}"
    values = {
        "state": stats.state.value,
        "state_reason": reason,
        "forced_local": str(stats.forced_local).lower(),
        "edge_rtt_p50_ms": _ms(stats.edge_rtt_p50_ms),
        "edge_rtt_p99_ms": _ms(stats.edge_rtt_p99_ms),
        "local_latency_p50_ms": _ms(stats.local_p50_ms),
        "local_latency_p99_ms": _ms(stats.local_p99_ms),
        "last_probe_ms": _ms(stats.last_probe_ms),
        **{k: str(v) for k, v in counters.items()},
        "frames_dropped_recent": str(recently_dropped),
        "frames_missing_in_transport_recent": str(missing),
        "answers_edge": str(stats.answers.get("edge", 0)),
        "answers_local": str(stats.answers.get("local", 0)),
        "answers_failed": str(stats.answers.get("none", 0)),
        "answers_failed_recent": str(stats.recent_answers.get("none", 0)),
        "failovers": str(stats.failovers),
        "late_edge_answers_dropped": str(stats.late_edge_dropped),
        "hedged": str(stats.hedged),
        "event_callback_errors": str(stats.event_callback_errors),
        "stopped_threads": ",".join(stopped_threads),
        **{f"edge_failures_{k}": str(v) for k, v in sorted(stats.edge_failures.items())},
    }
    status = DiagnosticStatus(level=level, name="perception_node: router", hardware_id=hardware_id,
                              message=message,
                              values=[KeyValue(key=k, value=v) for k, v in values.items()])
    array = DiagnosticArray(status=[status])
    array.header.stamp = stamp
    return array
