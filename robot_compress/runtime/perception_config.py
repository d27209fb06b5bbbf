"""The perception node's settings: typed, validated once, with the ranges the ROS parameter
descriptors publish.

The node declares one ROS parameter per field (description and range come from the field's
`setting()`), so `config/perception.yaml`, the descriptors and the checks cannot drift apart.
The edge token is not a parameter (any participant on the ROS domain can read parameters): it
comes from the file named by `edge_token_file` or from $ROBOT_COMPRESS_EDGE_TOKEN.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import model_validator
from pydantic.fields import FieldInfo

from robot_compress.runtime.errors import RobotCompressError
from robot_compress.runtime.package_data import share_dir
from robot_compress.runtime.preprocess import MAX_IMAGE_PIXELS
from robot_compress.runtime.schema import Schema, setting, validate

CONFIG_FILE = share_dir() / "config" / "perception.yaml"
TOKEN_ENV = "ROBOT_COMPRESS_EDGE_TOKEN"
# deadline_ms when it is left at 0, by the local model's task. Classification: above the CIFAR
# edge model's worst healthy-link p99 (23 ms) with room, short enough that a black hole costs one
# frame at 30 Hz (docs/FAULTS.md, "Defaults, and why"). Detection: the 640 edge detector's worst
# measured p99 round trip, 185 ms, plus about a third (docs/DETECTION.md, "The default deadline").
TASK_DEADLINE_MS: dict[str, float] = {"classification": 60.0, "detection": 250.0}


class ConfigError(RobotCompressError, ValueError):
    """A setting is missing, of the wrong type or out of its range."""


class RouterConfig(Schema):
    """How the router chooses between the edge and the on-robot model (times in milliseconds)."""

    deadline_ms: float = setting(0.0, "per-frame deadline for the edge answer; after it the frame is "
                                 "answered locally (0 = the local model's task default: " + ", ".join(
                                     f"{task} {ms:g}" for task, ms in TASK_DEADLINE_MS.items()) + " ms)",
                                 0.0, 60000.0)
    failure_threshold: int = setting(1, "consecutive edge failures that open the circuit (EDGE -> LOCAL)",
                                     1, 1000)
    probe_period_ms: float = setting(250.0, "how often the edge is probed while LOCAL/PROBING", 10.0, 600000.0)
    probe_timeout_ms: float = setting(200.0, "timeout of one probe", 1.0, 60000.0)
    recovery_probes: int = setting(3, "consecutive healthy probes needed to go back to EDGE", 1, 1000)
    max_edge_latency_ms: float = setting(0.0, "a probe slower than this is unhealthy (0 = no limit)",
                                         0.0, 60000.0)
    hedge_after_ms: float = setting(0.0, "start the local model when the edge has not answered after "
                                    "this long, take the first valid answer (0 = no hedging)", 0.0, 60000.0)
    edge_max_inflight: int = setting(4, "edge requests in flight at once; more are answered locally", 1, 64)

    @model_validator(mode="after")
    def _hedge_before_deadline(self) -> RouterConfig:
        """Checked against a set deadline here, against a task default by `for_task`."""
        if self.deadline_ms and self.hedge_after_ms and self.hedge_after_ms >= self.deadline_ms:
            raise ValueError(f"hedge_after_ms ({self.hedge_after_ms:g}) must be below deadline_ms "
                             f"({self.deadline_ms:g}), or 0 to turn hedging off")
        return self

    @property
    def resolved(self) -> bool:
        return self.deadline_ms > 0

    def for_task(self, task: str) -> RouterConfig:
        """These settings with `deadline_ms` 0 replaced by `task`'s default; ConfigError when the
        hedge is then not below the deadline, naming both and where the deadline came from."""
        if self.resolved:
            return self
        if task not in TASK_DEADLINE_MS:
            raise ConfigError(f"no default deadline_ms for task {task!r}; tasks with one: "
                              f"{sorted(TASK_DEADLINE_MS)} (or set deadline_ms)")
        deadline = TASK_DEADLINE_MS[task]
        if self.hedge_after_ms and self.hedge_after_ms >= deadline:
            raise ConfigError(f"hedge_after_ms ({self.hedge_after_ms:g}) must be below deadline_ms ({deadline:g}, "
                              f"the {task} default), or 0 to turn hedging off; or set deadline_ms")
        return self.model_copy(update={"deadline_ms": deadline})

    def deadline_origin(self, task: str) -> str:
        """Where `for_task(task)`'s deadline comes from, in words (the node's start-up line)."""
        return "set by deadline_ms" if self.resolved else f"the {task} default, deadline_ms 0"


class NodeConfig(Schema):
    """What the perception node needs besides the router settings."""

    local_model: str = setting("models/robot_balanced", "on-robot model directory (models/<name>)")
    local_threads: int = setting(1, "ONNX Runtime threads for the on-robot model", 1, 64)
    local_providers: Literal["cpu", "auto"] = setting(
        "cpu", "ONNX Runtime providers for the on-robot model: cpu, or auto (TensorRT, then CUDA, then CPU: "
        "whichever the installed ONNX Runtime has)")
    edge_url: str = setting("127.0.0.1:8001", "edge server host:port (OIP v2 gRPC); empty = local only")
    edge_model: str = setting("cifar10_resnet56", "model name on the edge server")
    edge_token_file: str = setting("", f"file holding the bearer token for the edge server (empty: "
                                   f"${TOKEN_ENV} if set, else no token)")
    queue_size: int = setting(3, "frames waiting for inference; when full the oldest is dropped "
                              "(newest frame wins) and counted", 1, 100)
    top_k: int = setting(3, "labels per result", 1, 100)
    score_threshold: float = setting(0.0, "detection models: publish boxes scored above this (0 = the model "
                                     "manifest's detection.score_threshold)", 0.0, 1.0)
    max_detections: int = setting(100, "detection models: most boxes published per frame, best first", 1, 10000)
    class_filter: str = setting("", "detection models: comma-separated class names to publish, e.g. "
                                "'person,car' (empty = every class); checked against the model's labels")
    publish_annotated: bool = setting(True, "detection models: offer ~/annotated (the frame with its boxes "
                                      "drawn), drawn and encoded only while someone subscribes")
    diagnostics_period_s: float = setting(1.0, "how often /diagnostics is published", 0.05, 60.0)
    max_image_pixels: int = setting(MAX_IMAGE_PIXELS, "largest camera image (width x height) accepted; checked "
                                    "from the header before decoding, larger frames are bad input (default "
                                    "8192x4096: 4K and 24 MP cameras)", 1, 1 << 31)


class PerceptionConfig(Schema):
    node: NodeConfig = setting(default_factory=NodeConfig)
    router: RouterConfig = setting(default_factory=RouterConfig)

    @classmethod
    def from_flat(cls, values: Mapping[str, Any], where: str = "perception settings") -> PerceptionConfig:
        """Build from one flat name -> value mapping (ROS parameters, YAML); unknown names are errors."""
        fields = settings()
        unknown = sorted(set(values) - set(fields))
        if unknown:
            raise ConfigError(f"{where}: unknown setting(s) {unknown}; known: {sorted(fields)}")
        parts = {"node": {k: v for k, v in values.items() if k in NodeConfig.model_fields},
                 "router": {k: v for k, v in values.items() if k in RouterConfig.model_fields}}
        return cls(node=validate(NodeConfig, parts["node"], where, ConfigError),
                   router=validate(RouterConfig, parts["router"], where, ConfigError))

    def flat(self) -> dict[str, Any]:
        return {**self.node.model_dump(), **self.router.model_dump()}

    def for_task(self, task: str) -> PerceptionConfig:
        """These settings with the router's task defaults filled in (see RouterConfig.for_task)."""
        return self.model_copy(update={"router": self.router.for_task(task)})


def settings() -> dict[str, FieldInfo]:
    """Every setting of the node, node fields first (for declaring ROS parameters)."""
    return {**NodeConfig.model_fields, **RouterConfig.model_fields}


def edge_token(config: NodeConfig, environ: Mapping[str, str] = os.environ) -> str | None:
    """The bearer token for the edge: from `edge_token_file`, else $ROBOT_COMPRESS_EDGE_TOKEN, else
    None. A file or variable that holds only whitespace is an error, not an empty token."""
    if config.edge_token_file:
        path = Path(config.edge_token_file)
        try:
            token = path.read_text().strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"setting 'edge_token_file': cannot read {path}: {exc}") from exc
        if not token:
            raise ConfigError(f"setting 'edge_token_file': {path} is empty; write the token into it, "
                              f"or set edge_token_file to '' for no token")
        return token
    if TOKEN_ENV in environ:
        token = environ[TOKEN_ENV].strip()
        if not token:
            raise ConfigError(f"${TOKEN_ENV} is set but empty; set it to the token, or unset it for no token")
        return token
    return None


def load_yaml(path: str | Path = CONFIG_FILE) -> PerceptionConfig:
    """Read a ROS parameter file (`<node>: ros__parameters: {...}`) or a flat mapping."""
    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read perception settings {path}: {exc}") from exc
    if isinstance(data, dict) and len(data) == 1:
        (only,) = data.values()
        if isinstance(only, dict) and "ros__parameters" in only:
            data = only["ros__parameters"]
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of settings (or <node>: ros__parameters: ...)")
    return PerceptionConfig.from_flat(data, where=str(path))
