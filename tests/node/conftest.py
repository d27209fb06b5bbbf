"""Fixtures for tests with real processes: the edge server, perception_node, sim_camera, and an
rclpy listener in the test process. Every process is stopped at teardown, also when a test fails,
and its output is shown in the failure message."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from robot_compress.ros.launch_description import ProcessSpec, dds_environment
from robot_compress.ros.messages import RESULT_JSON_TOPIC
from tests.conftest import EDGE_MODEL, MODELS, REPO, SMALL_MODEL, free_port

CONFIG = REPO / "config" / "perception.yaml"
TOPIC = "/camera/image_raw"
REMAP = {"image": TOPIC, "image/compressed": f"{TOPIC}/compressed"}


def stamp_key(stamp) -> tuple[int, int]:
    """(sec, nanosec) of a builtin_interfaces/Time or its JSON form."""
    if isinstance(stamp, dict):
        return stamp["sec"], stamp["nanosec"]
    return stamp.sec, stamp.nanosec


def wait_until(predicate, timeout: float, what: str, interval: float = 0.02, detail=None):
    """`predicate()` once truthy; else AssertionError naming `what` and, if given, `detail()`."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}" + (f": {detail()}" if detail else ""))


class Processes:
    """Starts children with the test's environment (ROS_DOMAIN_ID, Fast DDS profile); logs to files."""

    def __init__(self, log_dir: Path):
        self.log_dir = log_dir
        self.children: list[tuple[str, subprocess.Popen, Path]] = []

    def start(self, name: str, command: list[str], dds_profile: bool = True) -> subprocess.Popen:
        """`dds_profile=False`: Fast DDS' default settings, as a third-party camera driver has them."""
        log = self.log_dir / f"{name}-{len(self.children)}.log"
        base = {k: v for k, v in os.environ.items() if dds_profile or k != "FASTRTPS_DEFAULT_PROFILES_FILE"}
        env = {**base, **(dds_environment() if dds_profile else {}), "PYTHONUNBUFFERED": "1",
               "RCUTILS_COLORIZED_OUTPUT": "0"}
        with open(log, "wb") as out:
            child = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=REPO,
                                     start_new_session=True)
        self.children.append((name, child, log))
        return child

    def start_spec(self, spec: ProcessSpec, dds_profile: bool = True) -> subprocess.Popen:
        return self.start(spec.name, spec.command(), dds_profile)

    @staticmethod
    def stop(child: subprocess.Popen, sig: int = signal.SIGINT, timeout: float = 10.0) -> int:
        if child.poll() is None:
            child.send_signal(sig)
            try:
                child.wait(timeout)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        return child.returncode

    def output(self, child: subprocess.Popen | None = None) -> str:
        return "\n".join(f"--- {name} (pid {c.pid}, rc {c.poll()}) ---\n{log.read_text(errors='replace')[-3000:]}"
                         for name, c, log in self.children if child is None or c is child)

    def stop_all(self) -> None:
        for _, child, _ in reversed(self.children):
            self.stop(child)


@pytest.fixture
def processes(tmp_path, request):
    procs = Processes(tmp_path)
    yield procs
    procs.stop_all()
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        print(procs.output())


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)


class EdgeServer:
    """A real edge server process on a loopback port; can be killed and started again on that port."""

    def __init__(self, processes: Processes):
        self.processes, self.port, self.child = processes, free_port(), None
        self.url = f"127.0.0.1:{self.port}"

    def start(self) -> float:
        """Start and wait until it serves the edge model; returns the monotonic time it was ready."""
        from robot_compress.runtime.backend import BackendError
        from robot_compress.runtime.edge_client import ChannelSettings, EdgeBackend
        from robot_compress.runtime.model_contract import ModelDir

        self.child = self.processes.start("edge_server", ProcessSpec(
            "edge_server", "robot-compress", ros_node=False, arguments=(
                "edge-serve", "--model-repository", str(MODELS), "--host", "127.0.0.1",
                "--port", str(self.port))).command())
        # A short reconnect backoff, so this sees the server within 50 ms of it listening.
        fast = ChannelSettings(max_reconnect_backoff_s=0.05)
        with EdgeBackend(self.url, ModelDir.load(EDGE_MODEL).manifest, channel=fast) as client:
            end = time.monotonic() + 30
            while time.monotonic() < end:
                assert self.child.poll() is None, self.processes.output(self.child)
                try:
                    client.probe(0.2)
                    return time.monotonic()
                except BackendError:
                    time.sleep(0.05)
        raise AssertionError(f"edge server not ready after 30 s\n{self.processes.output(self.child)}")

    def kill(self) -> None:
        self.processes.stop(self.child, signal.SIGKILL)


@pytest.fixture
def edge_server(processes):
    server = EdgeServer(processes)
    server.start()
    return server


def node_spec(edge_url: str = "", **parameters) -> ProcessSpec:
    """perception_node with the shipped parameter file and test overrides (edge_url "" = local only)."""
    return ProcessSpec("perception_node", "perception_node", params_file=str(CONFIG),
                       parameters={"local_model": str(SMALL_MODEL), "edge_url": edge_url,
                                   "edge_model": EDGE_MODEL.name, "diagnostics_period_s": 0.2,
                                   # room for a stall on a loaded 2-core machine: drops would be counted,
                                   # but these tests check that every frame gets its result
                                   "queue_size": 8, **parameters},
                       remappings=REMAP)


def camera_spec(source: Path, count: int, rate_hz: float, **parameters) -> ProcessSpec:
    return ProcessSpec("sim_camera", "sim_camera", parameters={
        "source": str(source), "count": count, "rate_hz": rate_hz, "wait_for_subscribers": 1,
        "wait_for_truth_subscribers": 1, **parameters}, remappings=REMAP)


class Listener:
    """An rclpy node in the test process that records what the perception stack publishes."""

    def __init__(self):
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import DurabilityPolicy, QoSProfile
        from std_msgs.msg import String

        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node("test_listener", context=self.context)
        self.lock = threading.Lock()
        self.results: list[dict] = []
        self.truth: list[dict] = []
        self.backend: list[tuple[float, str]] = []
        self.diagnostics: dict[str, str] = {}
        # The JSON result: ~/classification, or ~/route where vision_msgs types ~/classification.
        self.node.create_subscription(String, f"/perception_node/{RESULT_JSON_TOPIC}",
                                      lambda m: self._add(self.results, json.loads(m.data)), 1000)
        self.node.create_subscription(String, "/sim_camera/ground_truth",
                                      lambda m: self._add(self.truth, json.loads(m.data)), 1000)
        latched = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self.node.create_subscription(String, "/perception_node/backend",
                                      lambda m: self._add(self.backend, (time.monotonic(), m.data)), latched)
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 10)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self._running = True
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _spin(self):
        while self._running:
            self.executor.spin_once(timeout_sec=0.05)

    def _add(self, items: list, item) -> None:
        with self.lock:
            items.append(item)

    def _on_diagnostics(self, msg) -> None:
        for status in msg.status:
            if status.name == "perception_node: router":
                with self.lock:
                    self.diagnostics = {kv.key: kv.value for kv in status.values}

    def snapshot(self, name: str):
        with self.lock:
            value = getattr(self, name)
            return list(value) if isinstance(value, list) else dict(value)

    def backend_now(self) -> str | None:
        with self.lock:
            return self.backend[-1][1] if self.backend else None

    def wait_for_backend(self, name: str, timeout: float, since: float = 0.0) -> float:
        """Monotonic time at which ~/backend said `name` after `since` (waiting up to `timeout`)."""
        def found():
            with self.lock:
                return next((t for t, b in self.backend if b == name and t >= since), None)
        return wait_until(found, timeout, f"~/backend == {name!r}")

    def close(self):
        self._running = False
        self._thread.join(2)
        self.executor.shutdown()
        self.node.destroy_node()
        self.context.try_shutdown()


@pytest.fixture
def listener(ros_domain_id):
    node = Listener()
    yield node
    node.close()
