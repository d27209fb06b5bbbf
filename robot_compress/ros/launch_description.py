"""Which processes make up the perception stack, with which parameters: one plain-Python answer.

`launch/perception.launch.py` (ROS launch) and `robot-compress up` (plain subprocesses, for
machines without ROS's launch tools) both read `ARGUMENTS` and `describe()`, so the two start
the same processes with the same parameters. Argument values are strings, as in ROS launch.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from robot_compress.runtime.package_data import share_dir

CONFIG_DIR = share_dir() / "config"
DDS_PROFILE = CONFIG_DIR / "fastdds.xml"


@dataclass(frozen=True)
class Argument:
    name: str
    default: str
    description: str


ARGUMENTS = (
    Argument("params_file", str(CONFIG_DIR / "perception.yaml"), "perception_node parameter file"),
    Argument("local_model", "", "on-robot model directory (empty: from params_file)"),
    Argument("edge_url", "", "edge host:port (empty: from params_file, or the local edge server when "
                             "edge_server is true; 'none': local only)"),
    Argument("edge_model", "", "model name on the edge (empty: from params_file)"),
    Argument("edge_token_file", "", "file holding the edge's bearer token (empty: from params_file, else "
             "$ROBOT_COMPRESS_EDGE_TOKEN, else none)"),
    Argument("image_topic", "/camera/image_raw", "camera topic (its /compressed sibling is used too)"),
    Argument("camera", "false", "also start sim_camera"),
    Argument("camera_source", "", "sim_camera source: CIFAR-10 .npz, image folder or video"),
    Argument("camera_rate_hz", "10.0", "sim_camera frame rate"),
    Argument("camera_count", "0", "sim_camera frames, then it exits (0: the source once)"),
    Argument("world", "none", "also start a simulated robot: 'turtlebot3' (sim_world, MuJoCo) or 'none'"),
    Argument("world_mode", "cifar10", "sim_world mode: 'cifar10' (one board filling the view, for classification) "
                                      "or 'coco' (picture boards with boxes along a patrol)"),
    Argument("world_rate_hz", "15.0", "sim_world camera frame rate"),
    Argument("world_width", "320", "sim_world camera image width"),
    Argument("world_height", "240", "sim_world camera image height"),
    Argument("edge_server", "false", "also start an edge server on loopback"),
    Argument("model_repository", "models", "the edge server's model repository"),
    Argument("edge_port", "8001", "the edge server's gRPC port"),
)
DEFAULTS = {a.name: a.default for a in ARGUMENTS}


@dataclass(frozen=True)
class ProcessSpec:
    """One process: a ROS node (parameters, remappings) or a plain command (arguments)."""

    name: str
    executable: str  # console script name
    ros_node: bool = True
    params_file: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    remappings: dict[str, str] = field(default_factory=dict)
    arguments: tuple[str, ...] = ()

    def command(self, bin_dir: Path | None = None) -> list[str]:
        """The command line that starts this process without ROS launch."""
        exe = find_executable(self.executable, bin_dir)
        if not self.ros_node:
            return [exe, *self.arguments]
        cmd = [exe, "--ros-args", "-r", f"__node:={self.name}"]
        if self.params_file:
            cmd += ["--params-file", self.params_file]
        for key, value in self.parameters.items():
            cmd += ["-p", f"{key}:={_yaml_value(value)}"]
        for source, target in self.remappings.items():
            cmd += ["-r", f"{source}:={target}"]
        return cmd


def _yaml_value(value: Any) -> str:
    """A `-p name:=value` value: rcl parses it as YAML, and JSON scalars are YAML."""
    return json.dumps(value)


def _flag(values: dict[str, str], name: str) -> bool:
    text = str(values[name]).strip().lower()
    if text not in ("true", "false", "1", "0"):
        raise ValueError(f"launch argument '{name}' must be true or false, got {values[name]!r}")
    return text in ("true", "1")


def _number(values: dict[str, str], name: str, kind: type) -> Any:
    try:
        return kind(values[name])
    except ValueError:
        raise ValueError(f"launch argument '{name}' must be {kind.__name__}, got {values[name]!r}") from None


def describe(overrides: dict[str, str] | None = None) -> list[ProcessSpec]:
    """The processes to start for these launch argument values (missing ones take the defaults)."""
    unknown = sorted(set(overrides or {}) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"unknown launch argument(s) {unknown}; known: {sorted(DEFAULTS)}")
    values = {**DEFAULTS, **(overrides or {})}
    topic = values["image_topic"]
    remap = {"image": topic, "image/compressed": f"{topic}/compressed"}
    specs = []
    edge_url = values["edge_url"]
    if _flag(values, "edge_server"):
        port = _number(values, "edge_port", int)
        specs.append(ProcessSpec("edge_server", "robot-compress", ros_node=False, arguments=(
            "edge-serve", "--model-repository", values["model_repository"], "--host", "127.0.0.1", "--port", str(port))))
        edge_url = edge_url or f"127.0.0.1:{port}"
    parameters: dict[str, Any] = {}
    if edge_url:
        parameters["edge_url"] = "" if edge_url == "none" else edge_url
    for name in ("local_model", "edge_model", "edge_token_file"):
        if values[name]:
            parameters[name] = values[name]
    specs.append(ProcessSpec("perception_node", "perception_node", params_file=values["params_file"],
                             parameters=parameters, remappings=remap))
    if _flag(values, "camera"):
        if not values["camera_source"]:
            raise ValueError("launch argument 'camera_source' is required with camera:=true")
        specs.append(ProcessSpec("sim_camera", "sim_camera", parameters={
            "source": values["camera_source"], "rate_hz": _number(values, "camera_rate_hz", float),
            "count": _number(values, "camera_count", int), "wait_for_subscribers": 1}, remappings=remap))
    world = values["world"].strip().lower()
    if world not in ("none", "turtlebot3"):
        raise ValueError(f"launch argument 'world' must be 'none' or 'turtlebot3', got {values['world']!r}")
    if world == "turtlebot3":
        if _flag(values, "camera"):
            raise ValueError("launch arguments camera:=true and world:=turtlebot3 both start a camera; choose one")
        if values["world_mode"] not in ("cifar10", "coco"):
            raise ValueError(f"launch argument 'world_mode' must be 'cifar10' or 'coco', got {values['world_mode']!r}")
        specs.append(ProcessSpec("sim_world", "sim_world", parameters={
            "mode": values["world_mode"], "rate_hz": _number(values, "world_rate_hz", float),
            "width": _number(values, "world_width", int), "height": _number(values, "world_height", int)},
            remappings={"camera/image_raw": topic}))
    return specs


def dds_environment(environ: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for the processes: the camera-sized Fast DDS profile unless one is already set."""
    environ = os.environ if environ is None else environ
    if "FASTRTPS_DEFAULT_PROFILES_FILE" in environ or not DDS_PROFILE.is_file():
        return {}
    return {"FASTRTPS_DEFAULT_PROFILES_FILE": str(DDS_PROFILE)}


def find_executable(name: str, bin_dir: Path | None = None) -> str:
    """A console script beside this Python (the venv's bin/) first, else from PATH."""
    for directory in (bin_dir, Path(sys.executable).parent):
        if directory is not None and (directory / name).is_file():
            return str(directory / name)
    found = shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"executable '{name}' not found beside {sys.executable} or on PATH; "
                                f"is robot_compress installed (pip install -e . / colcon build)?")
    return found
