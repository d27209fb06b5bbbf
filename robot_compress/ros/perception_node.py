"""The perception node: camera frames in, one result per frame out (a classification, or the
detections of a detection model), edge or on-robot.

A thin rclpy shell over runtime/router.py. The executor thread only counts frames and hands them
to a bounded queue (newest frame wins); one inference thread converts, preprocesses, routes and
publishes. Parameters are declared from runtime/perception_config.py and are read-only: they are
read once at start and validated there, with errors that name the parameter.

Topics: `image` (sensor_msgs/Image) and `image/compressed` (sensor_msgs/CompressedImage) in;
`~/classification` (classifiers) or `~/detections` and `~/annotated` (detectors), `~/backend`
(transient-local), `/diagnostics` out; service `~/force_local`. The task is the local model's; an
edge model of another task is refused at start.
"""

from __future__ import annotations

import functools
import sys
import threading
import time
import traceback

import numpy as np
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import String
from std_srvs.srv import SetBool

from robot_compress.ros import messages
from robot_compress.ros.image_conversion import array_to_image, compressed_to_array, image_to_array
from robot_compress.ros.parameters import declare
from robot_compress.ros.run_node import run_node
from robot_compress.ros.transport_monitor import TransportMonitor
from robot_compress.runtime.backend import BackendError
from robot_compress.runtime.classification import predictions
from robot_compress.runtime.detection import ImageDetector, draw_detections, rows_to_detections
from robot_compress.runtime.errors import RobotCompressError
from robot_compress.runtime.frame_queue import LatestFrameQueue
from robot_compress.runtime.local_backend import LocalBackend
from robot_compress.runtime.package_data import data_path
from robot_compress.runtime.perception_config import ConfigError, PerceptionConfig, edge_token, settings
from robot_compress.runtime.preprocess import preprocess, to_model_channels
from robot_compress.runtime.router import Router, RouterEvent, RouterState

NODE_NAME = "perception_node"
BAD_INPUT_LOG_PERIOD_S = 5.0
FRAME_ERROR_LOG_PERIOD_S = 5.0
# Router state changes are few and each one matters: reliable, and the last ones kept for late joiners.
EVENTS_QOS = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)


class PerceptionNode(Node):
    def __init__(self, **kwargs):
        super().__init__(NODE_NAME, **kwargs)
        self.config = self._read_parameters()
        node_cfg = self.config.node
        self._edge_token = edge_token(node_cfg) if node_cfg.edge_url else None  # a bad token file fails first
        # frames_in == frames_out + frames_dropped (self.queue.dropped) + bad_input + frame_errors
        self._counters = {"frames_in": 0, "frames_out": 0, "bad_input": 0, "frame_errors": 0}
        self._count_lock = threading.Lock()
        self._dropped_reported = 0  # frames_dropped at the last diagnostics report
        self.local = LocalBackend(data_path(node_cfg.local_model), threads=node_cfg.local_threads,
                                  providers=node_cfg.local_providers)
        self.manifest = self.local.manifest
        # deadline_ms 0 is the task's default: known only now, from the local model's manifest.
        self._deadline_origin = self.config.router.deadline_origin(self.manifest.task)
        self.config = self.config.for_task(self.manifest.task)
        self.local.warm_up()  # pay ONNX Runtime's first runs now, not on the first failover
        self.detecting = self.manifest.task == "detection"
        self._classes = self._class_filter() if self.detecting else None
        self.edge = self._make_edge() if node_cfg.edge_url else None
        if self.edge is not None:
            self._check_edge_task()

        if self.detecting:
            self.result_pub = self.create_publisher(messages.DETECTION_TYPE, "~/detections", 100)
            self.annotated_pub = (self.create_publisher(Image, "~/annotated", qos_profile_sensor_data)
                                  if node_cfg.publish_annotated else None)
        else:
            self.result_pub = self.create_publisher(messages.CLASSIFICATION_TYPE, "~/classification", 100)
        self.route_pub = self.create_publisher(String, "~/route", 100) if messages.HAVE_VISION_MSGS else None
        latched = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL,
                             reliability=ReliabilityPolicy.RELIABLE)
        self.backend_pub = self.create_publisher(String, "~/backend", latched)
        self.events_pub = self.create_publisher(String, "~/events", EVENTS_QOS)
        self.diag_pub = self.create_publisher(messages.DiagnosticArray, "/diagnostics", 10)

        # A detector's frames go to the router as camera images: each backend letterboxes at its own
        # model's size and answers in the image's pixels, so the router passes answers through.
        local, edge = ((ImageDetector(self.local), self.edge and ImageDetector(self.edge)) if self.detecting
                       else (self.local, self.edge))
        self.router = Router(local, edge, self.config.router, on_event=self._on_router_event)
        self.queue = LatestFrameQueue(node_cfg.queue_size)
        self._worker = threading.Thread(target=self._work, name="perception-inference", daemon=True)
        self._worker.start()

        # Frames the camera published that never arrived (estimated), apart from the queue's own drops.
        self.transport = TransportMonitor(self.get_logger(), {
            name: self.resolve_topic_name(name) for name in ("image", "image/compressed")})
        raw = functools.partial(image_to_array, max_pixels=node_cfg.max_image_pixels)
        jpeg = functools.partial(compressed_to_array, max_pixels=node_cfg.max_image_pixels)
        self.create_subscription(Image, "image", lambda m: self._enqueue(m, raw, "image"), qos_profile_sensor_data)
        self.create_subscription(CompressedImage, "image/compressed",
                                 lambda m: self._enqueue(m, jpeg, "image/compressed"), qos_profile_sensor_data)
        self.create_service(SetBool, "~/force_local", self._force_local)
        self.create_timer(node_cfg.diagnostics_period_s, self._publish_diagnostics)
        self.get_logger().info(
            f"local model {self.local.model.root} ({self.manifest.name}), edge "
            f"{node_cfg.edge_url + ' model ' + node_cfg.edge_model if self.edge else 'off'}, "
            f"deadline {self.config.router.deadline_ms:g} ms ({self._deadline_origin}), {self.manifest.task}, "
            f"result type "
            f"{(messages.DETECTION_TYPE if self.detecting else messages.CLASSIFICATION_TYPE).__name__}")

    def _read_parameters(self) -> PerceptionConfig:
        return PerceptionConfig.from_flat(declare(self, settings(), ConfigError), where="parameters")

    def _make_edge(self):
        """The gRPC channel retries a lost server at least as often as the router probes, so a
        restarted edge is seen by the next probe, not after a long reconnect backoff."""
        from robot_compress.runtime.edge_client import ChannelSettings, EdgeBackend

        node_cfg, router_cfg = self.config.node, self.config.router
        channel = ChannelSettings(max_reconnect_backoff_s=min(1.0, router_cfg.probe_period_ms / 1000.0))
        return EdgeBackend(node_cfg.edge_url, self.manifest, model_name=node_cfg.edge_model,
                           token=self._edge_token, probe_timeout_s=router_cfg.probe_timeout_ms / 1000.0,
                           channel=channel)

    def _class_filter(self) -> set[int] | None:
        """The class indices `class_filter` names (None: every class); an unknown name is an error
        naming the accepted labels."""
        names = [n.strip() for n in self.config.node.class_filter.split(",") if n.strip()]
        if not names:
            return None
        labels = self.manifest.labels
        unknown = [n for n in names if n not in labels]
        if unknown:
            raise ConfigError(f"parameter 'class_filter': {unknown} not among model '{self.manifest.name}' "
                              f"labels: {labels}")
        return {labels.index(n) for n in names}

    def _check_edge_task(self) -> None:
        """Refuse an edge model that does another task than the local one (from the edge's metadata).
        An edge that cannot be asked now is checked by every probe instead (a mismatch never serves)."""
        node_cfg = self.config.node
        try:
            served = self.edge.served_task(self.config.router.probe_timeout_ms / 1000.0)
        except BackendError as exc:
            self.get_logger().info(f"edge model task not checked at start ({exc}); every probe checks it")
            return
        if served != self.manifest.task:
            self.edge.close()
            raise ConfigError(f"local model '{self.manifest.name}' ({node_cfg.local_model}) is a "
                              f"{self.manifest.task} model but edge model '{node_cfg.edge_model}' on "
                              f"{node_cfg.edge_url} is a {served} model: parameters 'local_model' and "
                              f"'edge_model' must name models of the same task")

    # --- executor thread -------------------------------------------------------------------------

    def _count(self, key: str, n: int = 1) -> None:
        with self._count_lock:
            self._counters[key] += n

    def _enqueue(self, msg, convert, topic: str = "image") -> None:
        self._count("frames_in")
        self.transport.observe(topic, msg.header)
        self.queue.put((msg, convert, time.time()))

    def _force_local(self, request, response):
        self.router.force_local(request.data)
        response.success = True
        response.message = f"force_local={request.data}; state {self.router.state.value}"
        return response

    def _on_router_event(self, event: RouterEvent) -> None:
        text = (f"router {event.previous.value if event.previous else '-'} -> {event.state.value}: "
                f"{event.reason}{' (' + event.detail + ')' if event.detail else ''}")
        if event.state is RouterState.LOCAL and event.previous is not None:
            self.get_logger().warning(text)
        else:  # rclpy wants one severity per call site
            self.get_logger().info(text)
        self.backend_pub.publish(String(data="edge" if event.state is RouterState.EDGE else "local"))
        self.events_pub.publish(messages.event_message(event))

    def tally(self) -> dict[str, int]:
        """Every frame counted once: frames_in == frames_out + frames_dropped + bad_input + frame_errors
        once the inference thread is idle or stopped (a frame in flight is in no other counter yet)."""
        with self._count_lock:
            return dict(self._counters, frames_dropped=self.queue.dropped)

    def _diagnostics(self) -> messages.DiagnosticArray:
        counters = {**self.tally(), **self.transport.values()}
        stats = self.router.stats()
        stopped = [name for name, alive in (("inference", self._worker.is_alive()), ("prober", stats.prober_alive))
                   if not alive]
        dropped = counters["frames_dropped"]
        recently_dropped, self._dropped_reported = dropped - self._dropped_reported, dropped
        return messages.diagnostics_message(self.get_clock().now().to_msg(), stats, counters, self.edge is not None,
                                            self.get_fully_qualified_name(), stopped_threads=stopped,
                                            recently_dropped=recently_dropped,
                                            recent_transport=self.transport.recent())

    def _publish_diagnostics(self) -> None:
        self.diag_pub.publish(self._diagnostics())

    # --- inference thread ------------------------------------------------------------------------

    def _work(self) -> None:
        """The inference thread: one frame at a time until the queue is closed. An unexpected error
        in one frame is counted and logged (throttled), and the thread goes on with the next frame."""
        while (item := self.queue.get()) is not None:
            try:
                self._process(*item)
            except Exception as exc:
                self._count("frame_errors")
                self.get_logger().error(f"frame failed, no result published: {type(exc).__name__}: {exc}\n"
                                        f"{traceback.format_exc()}", throttle_duration_sec=FRAME_ERROR_LOG_PERIOD_S)

    def _process(self, msg, convert, received_at: float) -> None:
        """One frame: the model's input from the message, then the task's own path to its result."""
        model_input = self._model_input(msg, convert)
        if model_input is None:
            return
        (self._detect if self.detecting else self._classify)(msg.header, model_input, received_at)
        self._count("frames_out")

    def _model_input(self, msg, convert) -> np.ndarray | None:
        """What the router takes for this frame: a classifier's preprocessed batch, or a detector's
        camera image as a BGR batch of one (each backend letterboxes it at its own model's size).
        None for a frame that is bad input (counted, and logged throttled)."""
        try:
            image, encoding = convert(msg)
            if self.detecting:
                return np.ascontiguousarray(to_model_channels(image, encoding, "BGR"))[None]
            return preprocess(image, encoding, self.manifest.preprocessing)
        except RobotCompressError as exc:
            self._count("bad_input")
            self.get_logger().warning(f"bad frame skipped: {exc}", throttle_duration_sec=BAD_INPUT_LOG_PERIOD_S)
            return None

    def _classify(self, header, batch: np.ndarray, received_at: float) -> None:
        """Route the batch, publish its top-k labels (none when no backend answered)."""
        result = self.router.classify(batch, stamp=header)
        prediction = None
        if result.logits is not None:
            (prediction,) = predictions(result.logits, self.manifest.labels, k=self.config.node.top_k)
        self.result_pub.publish(messages.classification_message(result, header, prediction, received_at))
        if self.route_pub is not None:
            self.route_pub.publish(messages.json_message(messages.result_record(result, header, prediction,
                                                                                received_at)))

    def _detect(self, header, bgr: np.ndarray, received_at: float) -> None:
        """Route the image, publish its boxes above the threshold and in `class_filter` (none when no
        backend answered), and the annotated image while someone subscribes to it."""
        result = self.router.classify(bgr, stamp=header)
        detections = None
        if result.logits is not None:
            node_cfg = self.config.node
            threshold = node_cfg.score_threshold or self.manifest.detection.score_threshold
            detections = rows_to_detections(result.logits[0], self.manifest.labels, threshold,
                                            node_cfg.max_detections, self._classes)
        self.result_pub.publish(messages.detections_message(result, header, detections, received_at))
        if self.route_pub is not None:
            self.route_pub.publish(messages.json_message(messages.detection_record(result, header, detections,
                                                                                   received_at)))
        if self.annotated_pub is not None and self.annotated_pub.get_subscription_count() > 0:
            annotated = array_to_image(draw_detections(bgr[0], detections or []), "bgr8")
            annotated.header = header
            self.annotated_pub.publish(annotated)

    def close(self) -> None:
        """Stops the inference thread after its current frame (frames still queued are dropped and
        counted) and logs the final tally, so a shutdown never loses a frame silently."""
        self.queue.close()
        self._worker.join(timeout=5.0)
        self.get_logger().info("stopped: " + ", ".join(f"{key} {value}" for key, value in self.tally().items()))
        self.router.close()
        if self.edge is not None:
            self.edge.close()
        self.local.close()


def main(args: list[str] | None = None) -> int:
    return run_node(PerceptionNode, NODE_NAME, (ConfigError, RobotCompressError), args, close=PerceptionNode.close)


if __name__ == "__main__":
    sys.exit(main())
