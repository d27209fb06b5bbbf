"""Run one scenario end to end on real processes, and return what the robot said.

The real edge server runs in the edge namespace (behind the fault proxy for `via_proxy`
scenarios); perception_node, sim_camera and the recorder run in the robot namespace. The
scenario's steps are carried out at their times after the first camera frame, each stamped
when it took effect. No ROS import here: every ROS part is a separate process.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from robot_compress.faults.netns import NetTestbed
from robot_compress.faults.proxy_control import ProxyClient
from robot_compress.faults.scenarios import Scenario, Step
from robot_compress.faults.stall_watch import StallWatch
from robot_compress.runtime import processes
from robot_compress.runtime.polling import wait_until
from robot_compress.runtime.processes import signal_group

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
# queue_size 3: a frame waiting out a black-hole deadline (60 ms) plus a scheduler stall must not
# push newer frames out of the node's newest-wins queue (1 loses frames; see docs/FAULTS.md).
NODE_PARAMS: dict[str, Any] = {"queue_size": 3}
# Detection runs: COCO photos with their boxes, the shipped detectors, and the node's detection
# default deadline (250 ms: the edge model takes 80-190 ms a frame on one shared core,
# docs/DETECTION.md). score_threshold 0.001: every box the graph keeps is published, so mAP reads
# as the offline benchmark's.
DETECTION_SOURCE = REPO.parent / "shared" / "data" / "coco" / "val_dev"
DETECTION_LOCAL_MODEL = REPO / "models" / "robot_yolox_nano_320"
DETECTION_EDGE_MODEL = REPO / "models" / "coco_yolox_nano_640"
DETECTION_NODE_PARAMS: dict[str, Any] = {"score_threshold": 0.001, "publish_annotated": False}
DETECTION_RATE_HZ = 5.0
# Steps whose fault begins or ends only once they finish: a server listening, a flood running,
# every thread of the edge stopped (SIGSTOP lands asynchronously; NetTestbed.freeze waits for it),
# the reset rules in place (one iptables-restore process: tens of ms on a loaded machine).
TAKES_EFFECT_WHEN_DONE = frozenset({"start_edge", "flood", "freeze_edge", "reject"})


def _last_cpu_of_several() -> str | None:
    """The edge side's default CPU: the last one, when there are several and taskset to pin to it."""
    cpus = sorted(os.sched_getaffinity(0))
    return str(cpus[-1]) if len(cpus) > 1 and shutil.which("taskset") else None


@dataclass(frozen=True)
class RunConfig:
    """How the robot side is set up for a run (router settings are the node's ROS parameters)."""

    source: Path
    rate_hz: float = 20.0
    image_size: tuple[int, int] = (32, 32)  # what the camera publishes (width, height)
    world: str | None = None  # "turtlebot3": the MuJoCo simulated robot's camera (sim_world) instead of sim_camera
    # With a world: "classification" shows the source's pictures on one board filling the view;
    # "detection" patrols past picture boards (COCO photos) whose boxes sim_world publishes per frame.
    world_task: str = "classification"
    local_model: Path = REPO / "models" / "robot_balanced"
    edge_model: Path = REPO / "models" / "cifar10_resnet56"
    node_params: dict[str, Any] = field(default_factory=lambda: dict(NODE_PARAMS))
    node_command: tuple[str, ...] = (str(BIN / "perception_node"),)  # e.g. a ROS install's lib/ path
    edge_port: int = 8001
    edge_kind: str = "edge_server"  # or "triton": the nvidia-pytriton wheel's Triton serving the edge model's twin
    external_edge: str | None = None  # host:port of an edge run elsewhere: start none of our own
    proxy_port: int = 8002
    startup_timeout_s: float = 60.0
    camera_loop: bool = False  # sim_camera starts its source again at the end (a short COCO folder)
    drain_s: float = 3.0  # after the camera's last frame, how long results may still come
    # CPUs (taskset list) for the edge side's processes: the edge is another machine, so a busy
    # edge (the overload scenario's flood) must not take the robot's CPU. None: not pinned.
    edge_cpus: str | None = field(default_factory=_last_cpu_of_several)

    def router_value(self, name: str) -> float:
        """A router setting as the node will use it: this run's value, else the default (the
        deadline's for the local model's task)."""
        from robot_compress.runtime.model_contract import ModelDir
        from robot_compress.runtime.perception_config import RouterConfig

        value = self.node_params.get(name, getattr(RouterConfig(), name))
        if name == "deadline_ms" and not value:
            value = RouterConfig().for_task(ModelDir.load(self.local_model).manifest.task).deadline_ms
        return value


@dataclass
class RunRecord:
    """Everything a run produced: the recorder's lines and the fault actions, both in wall time."""

    scenario: Scenario
    config: RunConfig
    records: list[dict]
    actions: list[tuple[float, str]]
    t0: float  # stamp of the first camera frame
    directory: Path
    machine_stalls: list[tuple[float, float]] = field(default_factory=list)  # StallWatch.stalls during the run


class RecordTail:
    """Reads the JSON lines a process appends to a file (the recorder's), as they come."""

    def __init__(self, path: Path):
        self.path = path
        self.offset = 0
        self.records: list[dict] = []

    def poll(self) -> list[dict]:
        if not self.path.exists():
            return []
        with self.path.open() as f:
            f.seek(self.offset)
            chunk = f.read()
        complete = chunk[: chunk.rfind("\n") + 1]
        self.offset += len(complete.encode())
        new = [json.loads(line) for line in complete.splitlines() if line.strip()]
        self.records.extend(new)
        return new

    def wait_for(self, predicate, timeout_s: float, what: str) -> dict:
        """The first record, old or new, for which `predicate` holds; TimeoutError after `timeout_s`."""
        seen = 0

        def found() -> dict | None:
            nonlocal seen
            self.poll()
            match = next((r for r in self.records[seen:] if predicate(r)), None)
            seen = len(self.records)
            return match

        return wait_until(found, timeout_s, f"{what} (see {self.path.parent})")


def _wait_for_text(path: Path, text: str, timeout_s: float, proc: subprocess.Popen) -> None:
    def said() -> bool:
        if path.exists() and text in path.read_text(errors="replace"):
            return True
        if proc.poll() is not None:
            raise RuntimeError(f"{path.stem} exited with {proc.returncode} before '{text}': {path}")
        return False

    wait_until(said, timeout_s, f"{path.stem} to say '{text}' ({path})")


def _queue_of_one(model_root: Path) -> None:
    """Rewrite a model's config.pbtxt so that one request runs and one waits; more are refused."""
    from google.protobuf import text_format

    from robot_compress.runtime.model_contract import CONFIG_FILE, read_config

    config = read_config(model_root / CONFIG_FILE)
    config.max_batch_size = 1
    config.dynamic_batching.max_queue_delay_microseconds = 0
    config.dynamic_batching.default_queue_policy.max_queue_size = 1
    (model_root / CONFIG_FILE).write_text(text_format.MessageToString(config))


def _ros_param(name: str, value: Any) -> list[str]:
    text = str(value).lower() if isinstance(value, bool) else repr(float(value)) if isinstance(value, float) else value
    return ["-p", f"{name}:={text}"]


class ScenarioRun:
    """Set up the two hosts, carry out the scenario, tear the processes down."""

    def __init__(self, scenario: Scenario, config: RunConfig, bed: NetTestbed, directory: Path):
        self.scenario, self.config, self.bed = scenario, config, bed
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.edge: subprocess.Popen | None = None
        self.flood: subprocess.Popen | None = None
        self.proxy: ProxyClient | None = None
        self.actions: list[tuple[float, str]] = []
        self.tail = RecordTail(self.dir / "records.jsonl")
        self._starts = 0
        self._shm_prefix = f"rc_failover_{os.getpid()}_{directory.name}_"  # a killed Triton's shared memory
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        # ament_index raises when AMENT_PREFIX_PATH is unset (pip install, no ROS workspace).
        self.env.setdefault("AMENT_PREFIX_PATH", sys.prefix)
        # The project's Fast DDS profile (camera-sized frames stay in shared memory), as launched.
        if (REPO / "config" / "fastdds.xml").is_file():
            self.env.setdefault("FASTRTPS_DEFAULT_PROFILES_FILE", str(REPO / "config" / "fastdds.xml"))

    def _spawn(self, side: str, name: str, argv: list[str], env: dict[str, str] | None = None) -> subprocess.Popen:
        if side == "edge" and self.config.edge_cpus is not None:
            argv = ["taskset", "--cpu-list", self.config.edge_cpus, *argv]  # execs in place: same pid
        log = (self.dir / f"{name}.log").open("a")
        with log:
            return self.bed.popen(side, argv, stdout=log, stderr=subprocess.STDOUT, env=env or self.env, cwd=REPO)

    # --- the edge -----------------------------------------------------------------------------
    def start_edge(self, repository: Path | None = None) -> None:
        """(Re)start the edge server and return once it listens (the end of a kill fault)."""
        self.stop_edge()
        self._starts += 1
        name = f"edge{self._starts}"
        repository = repository or self._edge_repository()
        if self.config.edge_kind == "triton":
            self._start_triton(name, repository / self.config.edge_model.name)
            return
        self.edge = self._spawn("edge", name, [
            str(BIN / "edge_server"), "--model-repository", str(repository), "--port", str(self.config.edge_port),
            "--log-level", "INFO", *self.scenario.edge_args])
        _wait_for_text(self.dir / f"{name}.log", "event=serving", self.config.startup_timeout_s, self.edge)

    def _edge_repository(self) -> Path:
        """A repository holding only the edge model (a link to it): a restarted edge is serving again
        in the time the scenarios allow, however many other models models/ holds."""
        repository = self.dir / "edge_repository"
        link = repository / self.config.edge_model.name
        if not link.exists():
            repository.mkdir(parents=True, exist_ok=True)
            link.symlink_to(self.config.edge_model.resolve(), target_is_directory=True)
        return repository

    def _start_triton(self, name: str, model_dir: Path) -> None:
        """Triton serving the Python-backend twin of `model_dir`. It has no limit on concurrent
        calls like the edge server's --max-concurrent-rpcs; its way to refuse work is the queue
        policy, so a scenario with that limit gets a queue of one and batches of one instead."""
        from robot_compress.edge import triton_server
        from robot_compress.edge.triton_repository import write_twin
        from robot_compress.runtime.model_contract import ModelDir

        twin_repository = self.dir / f"{name}_triton_repository"
        twin = write_twin(ModelDir.load(model_dir), twin_repository)
        if "--max-concurrent-rpcs" in self.scenario.edge_args:
            _queue_of_one(twin.root)
        backends = triton_server.python_backend_dir(self.dir / "triton_backends")
        self.edge = self._spawn("edge", name, triton_server.triton_command(
            twin_repository, backends, self.config.edge_port, host="0.0.0.0", shm_prefix=self._shm_prefix),
            env=triton_server.triton_environment(self.env))
        _wait_for_text(self.dir / f"{name}.log", triton_server.READY_TEXT, self.config.startup_timeout_s, self.edge)

    def stop_edge(self) -> None:
        if self.edge is not None and self.edge.poll() is None:
            self.bed.kill(self.edge)

    def _wrong_edge(self) -> None:
        from robot_compress.faults.wrong_model import make_wrong_shape_model

        repository = self.dir / "wrong_repository"
        make_wrong_shape_model(self.config.edge_model, repository)
        self.start_edge(repository)

    # --- steps ----------------------------------------------------------------------------------
    def _do(self, step: Step) -> None:
        """Carry out one step and stamp it when it took effect."""
        began = time.time()
        bed, args = self.bed, step.args
        action = step.action
        if action == "kill_edge":
            bed.kill(self.edge)
        elif action == "start_edge":
            self.start_edge()
        elif action == "freeze_edge":
            bed.freeze(self.edge)
        elif action == "thaw_edge":
            bed.thaw(self.edge)
        elif action in ("drop", "reject", "clear"):
            getattr(bed, action)()
        elif action in ("link_down", "link_up"):
            bed.set_link(action == "link_up")
        elif action == "flap":
            bed.flap(args["periods_s"]).join()
        elif action == "proxy":
            self.proxy.update(**args)
        elif action == "flood":
            self.flood = self._spawn("edge", "flood", [
                sys.executable, "-m", "robot_compress.faults.flood", "--url", f"127.0.0.1:{self.config.edge_port}",
                "--model-dir", str(self.config.edge_model), "--threads", str(args.get("threads", 8)),
                "--duration-s", str(self.scenario.duration_s)])
            _wait_for_text(self.dir / "flood.log", "started", 30, self.flood)
        elif action == "flood_stop":
            signal_group(self.flood, signal.SIGTERM)
            self.flood.wait(timeout=10)
        elif action == "swap_edge":
            self._wrong_edge()
        label = f"proxy:{args['mode']}" if action == "proxy" and "mode" in args else action
        self.actions.append((time.time() if action in TAKES_EFFECT_WHEN_DONE else began, label))

    # --- the whole run --------------------------------------------------------------------------
    def run(self) -> RunRecord:
        try:
            with StallWatch() as watch:
                record = self._run()
        finally:
            if self.config.edge_kind == "triton":
                self.stop_edge()
                from robot_compress.edge.triton_server import remove_shared_memory

                remove_shared_memory(self._shm_prefix)
        record.machine_stalls = watch.stalls
        return record

    def _run(self) -> RunRecord:
        cfg, scenario = self.config, self.scenario
        if cfg.external_edge:
            upstream = edge_url = cfg.external_edge
        else:
            self.start_edge()
            upstream, edge_url = f"127.0.0.1:{cfg.edge_port}", f"{self.bed.edge_ip}:{cfg.edge_port}"
        if scenario.via_proxy:
            control = f"unix:{self.dir / 'proxy.sock'}"
            self._spawn("edge", "proxy", [sys.executable, "-m", "robot_compress.faults.proxy", "--listen",
                                          f"{self.bed.edge_ip}:{cfg.proxy_port}", "--upstream", upstream,
                                          "--control", control])
            self.proxy = ProxyClient(control)
            self.proxy.wait_ready()
            edge_url = f"{self.bed.edge_ip}:{cfg.proxy_port}"
        recorder = self._spawn("robot", "recorder", [sys.executable, "-m", "robot_compress.faults.recorder",
                                                     "--out", str(self.tail.path)])
        params = {"local_model": str(cfg.local_model), "edge_model": cfg.edge_model.name, "edge_url": edge_url,
                  **cfg.node_params}
        # Started together: ~backend is transient-local, so the recorder gets the node's state late.
        node = self._spawn("robot", "perception_node", [
            *cfg.node_command, "--ros-args", *[a for k, v in params.items() for a in _ros_param(k, v)]])
        _wait_for_text(self.dir / "recorder.log", "ready", cfg.startup_timeout_s, recorder)
        self.tail.wait_for(lambda r: r["kind"] == "backend" and r["backend"] == "edge", cfg.startup_timeout_s,
                           "switch to the edge after start")
        frames = round(scenario.duration_s * cfg.rate_hz)
        width, height = cfg.image_size
        if cfg.world == "turtlebot3":
            # Imported here: the rest of this process needs no ROS.
            from robot_compress.ros.messages import WORLD_TRUTH_JSON_TOPIC

            # Same topics as sim_camera's, so the node and the recorder need no change.
            camera = self._spawn("robot", "sim_world", [
                sys.executable, "-m", "robot_compress.ros.sim_world", "--ros-args", "-r", "__node:=sim_world",
                *self._world_params(), *_ros_param("pictures", str(cfg.source)),
                *_ros_param("rate_hz", float(cfg.rate_hz)), *_ros_param("count", frames), *_ros_param("width", width),
                *_ros_param("height", height), *_ros_param("wait_for_subscribers", 2),
                *_ros_param("snapshot_dir", str(self.dir / "snapshots")),
                "-r", "camera/image_raw:=image", "-r", f"{WORLD_TRUTH_JSON_TOPIC}:=sim_camera/ground_truth"])
        else:
            camera = self._spawn("robot", "sim_camera", [
                str(BIN / "sim_camera"), "--ros-args", *_ros_param("source", str(cfg.source)),
                *_ros_param("rate_hz", float(cfg.rate_hz)), *_ros_param("count", frames), *_ros_param("width", width),
                *_ros_param("height", height), *_ros_param("wait_for_subscribers", 2),
                *_ros_param("loop", cfg.camera_loop)])
        first = self.tail.wait_for(lambda r: r["kind"] == "image", cfg.startup_timeout_s, "first camera frame")
        t0 = first["stamp"]["sec"] + first["stamp"]["nanosec"] * 1e-9
        for step in scenario.steps:
            time.sleep(max(0.0, t0 + step.at_s - time.time()))
            self._do(step)
        camera.wait(timeout=scenario.duration_s + cfg.startup_timeout_s)
        self._drain(frames)
        processes.stop((recorder, node), grace_s=10.0)
        self.tail.poll()
        return RunRecord(scenario, cfg, self.tail.records, self.actions, t0, self.dir)

    def _world_params(self) -> list[str]:
        if self.config.world_task == "detection":
            # The boards' boxes as the camera sees them (occlusion: hidden ones dropped, partly hidden
            # ones trimmed), and a snapshot about every second for the contact sheet.
            return [*_ros_param("mode", "coco"), *_ros_param("occlusion", True),
                    *_ros_param("snapshot_every", max(1, round(self.config.rate_hz)))]
        return [*_ros_param("mode", "cifar10"), *_ros_param("occlusion", False), *_ros_param("snapshot_every", 25)]

    def _drain(self, frames: int) -> None:
        """Wait until every frame has a result, or `drain_s` with nothing new."""
        quiet_until = time.monotonic() + self.config.drain_s
        while time.monotonic() < quiet_until:
            if any(r["kind"] == "result" for r in self.tail.poll()):
                quiet_until = time.monotonic() + self.config.drain_s
            if sum(r["kind"] == "result" for r in self.tail.records) >= frames:
                break
            time.sleep(0.05)
        # A duplicate, if any, would come now; and the node's final counters with its next diagnostics.
        last_result = max((r["t"] for r in self.tail.records if r["kind"] == "result"), default=0.0)
        with contextlib.suppress(TimeoutError):  # else: the counters of the previous diagnostics
            self.tail.wait_for(lambda r: r["kind"] == "diagnostics" and r["t"] > last_result + 0.3,
                               timeout_s=3.0, what="diagnostics after the last result")


def run_scenario(scenario: Scenario, config: RunConfig, directory: Path) -> RunRecord:
    """One scenario on a fresh pair of namespaces, removed again afterwards."""
    from robot_compress.faults.netns import net_testbed

    with net_testbed() as bed:
        return ScenarioRun(scenario, config, bed, directory).run()


def local_latency_ms(model: Path, source: Path, frames: int = 300) -> tuple[float, float]:
    """(p50, p99) of the on-robot model on real frames, one thread, as the node runs it: the
    local p99 in the black-hole bound (deadline + local p99 + 10 ms). A detector is timed on the
    source's COCO photos, letterbox and box mapping included."""
    import cv2
    import numpy as np

    from robot_compress.runtime.datasets import load_labelled_images
    from robot_compress.runtime.detection import ImageDetector
    from robot_compress.runtime.latency_stats import percentile
    from robot_compress.runtime.local_backend import LocalBackend
    from robot_compress.runtime.preprocess import preprocess

    backend = LocalBackend(model, threads=1)
    try:
        if backend.manifest.task == "detection":
            entries = json.loads((source / "instances.json").read_text())["images"][:frames]
            batches = [cv2.imread(str(source / "images" / e["file_name"]))[None] for e in entries]
            run = ImageDetector(backend).infer
        else:
            images = load_labelled_images(source, split="test", limit=frames).images
            batches = [preprocess(image, "rgb8", backend.manifest.preprocessing) for image in images]
            run = backend.infer
        run(np.ascontiguousarray(batches[0]))
        times = []
        for batch in batches:
            start = time.perf_counter()
            run(batch)
            times.append((time.perf_counter() - start) * 1000)
    finally:
        backend.close()
    return percentile(times, 50), percentile(times, 99)
