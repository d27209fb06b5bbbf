"""Fixtures for tests with real processes: perception_node, sim_camera (the edge server comes
from tests/conftest.py), and an rclpy listener in the test process. Every process is stopped at teardown, also when a test fails,
and its output is shown in the failure message."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from robot_compress.ros.launch_description import ProcessSpec, dds_environment
from robot_compress.runtime import processes as supervisor
from robot_compress.runtime.polling import wait_until
from tests.conftest import EDGE_MODEL, REPO, SMALL_MODEL

CONFIG = REPO / "config" / "perception.yaml"
TOPIC = "/camera/image_raw"
REMAP = {"image": TOPIC, "image/compressed": f"{TOPIC}/compressed"}
ROUTER_STATUS = "perception_node: router"


def stamp_key(stamp) -> tuple[int, int]:
    """(sec, nanosec) of a builtin_interfaces/Time or its JSON form."""
    if isinstance(stamp, dict):
        return stamp["sec"], stamp["nanosec"]
    return stamp.sec, stamp.nanosec


def image_msg(stamp_sec: int, encoding="rgb8", height=48, width=64, step=None, data=None):
    """A sensor_msgs/Image (black unless `data`); every field can be made wrong."""
    from sensor_msgs.msg import Image

    msg = Image(height=height, width=width, encoding=encoding, step=width * 3 if step is None else step)
    msg.header.stamp.sec = stamp_sec
    msg.data = bytes(msg.step * height) if data is None else data
    return msg


class Processes:
    """Starts children with the test's environment (ROS_DOMAIN_ID, Fast DDS profile); logs to files."""

    def __init__(self, log_dir: Path):
        self.log_dir = log_dir
        self.children: list[tuple[str, subprocess.Popen, Path]] = []

    def start(self, name: str, command: list[str], dds_profile: bool = True,
              env: dict[str, str] | None = None) -> subprocess.Popen:
        """`dds_profile=False`: Fast DDS' default settings, as a third-party camera driver has them;
        `env`: variables to add or replace."""
        log = self.log_dir / f"{name}-{len(self.children)}.log"
        base = {k: v for k, v in os.environ.items() if dds_profile or k != "FASTRTPS_DEFAULT_PROFILES_FILE"}
        env = {**base, **(dds_environment() if dds_profile else {}), "PYTHONUNBUFFERED": "1",
               "RCUTILS_COLORIZED_OUTPUT": "0", **(env or {})}
        child = supervisor.start(command, log, env=env, cwd=REPO)
        self.children.append((name, child, log))
        return child

    def start_spec(self, spec: ProcessSpec, dds_profile: bool = True,
                   env: dict[str, str] | None = None) -> subprocess.Popen:
        return self.start(spec.name, spec.command(), dds_profile, env)

    @staticmethod
    def stop(child: subprocess.Popen, sig: int = signal.SIGINT, timeout: float = 10.0) -> int:
        """`sig`, then SIGKILL after `timeout`; the exit code."""
        supervisor.stop(child, grace_s=timeout, signals=(sig, signal.SIGKILL))
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


def without_vision_msgs() -> dict[str, str]:
    """Environment for a child that must not find vision_msgs, as on a ROS install without it: a
    `vision_msgs` package that fails to import comes first on its PYTHONPATH."""
    path = [str(Path(__file__).parent / "without_vision_msgs"), os.environ.get("PYTHONPATH", "")]
    return {"PYTHONPATH": os.pathsep.join(p for p in path if p)}


@pytest.fixture
def vision_msgs():
    """The typed-message tests need vision_msgs here, as `make venv` builds it. They are skipped only
    where this machine cannot build it (no cmake or compiler); with the toolchain present a missing
    or failed build fails them."""
    import sys

    from robot_compress.ros import messages
    from robot_compress.ros.vision_msgs_build import missing_toolchain, read_status

    if messages.HAVE_VISION_MSGS:
        return messages
    missing = missing_toolchain(Path(sys.prefix))
    if missing:
        pytest.skip(f"vision_msgs cannot be built on this machine: {'; '.join(missing)}")
    pytest.fail(f"vision_msgs is not importable though its toolchain is here: run `python -m "
                f"robot_compress.ros.vision_msgs_build` (last build: {read_status()})")


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
        from robot_compress.ros.result_recorder import BackgroundNode, subscribe

        self.lock = threading.Lock()
        self.results: list[dict] = []
        self.truth: list[dict] = []
        self.backend: list[tuple[float, str]] = []
        self.diagnostics: dict[str, str] = {}
        self.diagnostics_messages: list[tuple[int, str]] = []  # (level, message) of every report
        self._ros = BackgroundNode("test_listener")
        self.node = self._ros.node  # for a test's own clients
        subscribe(self.node, self._on)
        self._ros.start()

    def _on(self, kind: str, fields: dict) -> None:
        with self.lock:
            if kind == "result":
                self.results.append(fields)
            elif kind == "truth":
                self.truth.append(fields)
            elif kind == "backend":
                self.backend.append((time.monotonic(), fields["backend"]))
            elif kind == "diagnostics" and fields["name"] == ROUTER_STATUS:
                self.diagnostics = fields["values"]
                self.diagnostics_messages.append((fields["level"], fields["message"]))

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
        self._ros.close()


@pytest.fixture
def listener(ros_domain_id):
    node = Listener()
    yield node
    node.close()
