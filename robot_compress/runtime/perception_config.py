"""The perception node's settings: one typed dataclass, validated once, with the ranges the ROS
parameter descriptors publish.

The node declares one ROS parameter per field (description and range come from the field's
metadata), so `config/perception.yaml`, the descriptors and the checks cannot drift apart.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from robot_compress.runtime.errors import RobotCompressError
from robot_compress.runtime.package_data import share_dir

CONFIG_FILE = share_dir() / "config" / "perception.yaml"


PROVIDER_CHOICES = ("cpu", "auto")  # LocalBackend's providers argument


class ConfigError(RobotCompressError, ValueError):
    """A setting is missing, of the wrong type or out of its range."""


def _setting(default: Any, description: str, low: float | None = None, high: float | None = None) -> Any:
    return field(default=default, metadata={"description": description, "range": (low, high)})


@dataclass(frozen=True)
class RouterConfig:
    """How the router chooses between the edge and the on-robot model (times in milliseconds)."""

    deadline_ms: float = _setting(60.0, "per-frame deadline for the edge answer; after it the frame "
                                  "is answered locally", 1.0, 60000.0)
    failure_threshold: int = _setting(1, "consecutive edge failures that open the circuit (EDGE -> LOCAL)",
                                      1, 1000)
    probe_period_ms: float = _setting(250.0, "how often the edge is probed while LOCAL/PROBING", 10.0, 600000.0)
    probe_timeout_ms: float = _setting(200.0, "timeout of one probe", 1.0, 60000.0)
    recovery_probes: int = _setting(3, "consecutive healthy probes needed to go back to EDGE", 1, 1000)
    max_edge_latency_ms: float = _setting(0.0, "a probe slower than this is unhealthy (0 = no limit)",
                                          0.0, 60000.0)
    hedge_after_ms: float = _setting(0.0, "start the local model when the edge has not answered after "
                                     "this long, take the first valid answer (0 = no hedging)", 0.0, 60000.0)
    edge_max_inflight: int = _setting(4, "edge requests in flight at once; more are answered locally", 1, 64)

    def __post_init__(self) -> None:
        validate(self)
        if self.hedge_after_ms and self.hedge_after_ms >= self.deadline_ms:
            raise ConfigError(f"hedge_after_ms ({self.hedge_after_ms:g}) must be below deadline_ms "
                              f"({self.deadline_ms:g}), or 0 to turn hedging off")


@dataclass(frozen=True)
class NodeConfig:
    """What the perception node needs besides the router settings."""

    local_model: str = _setting("models/robot_balanced", "on-robot model directory (models/<name>)")
    local_threads: int = _setting(1, "ONNX Runtime threads for the on-robot model", 1, 64)
    local_providers: str = _setting("cpu", "ONNX Runtime providers for the on-robot model: cpu, or auto "
                                    "(TensorRT, then CUDA, then CPU: whichever the installed ONNX Runtime has)")
    edge_url: str = _setting("127.0.0.1:8001", "edge server host:port (OIP v2 gRPC); empty = local only")
    edge_model: str = _setting("cifar10_resnet56", "model name on the edge server")
    edge_token: str = _setting("", "bearer token for the edge server (empty = none)")
    queue_size: int = _setting(3, "frames waiting for inference; when full the oldest is dropped "
                               "(newest frame wins) and counted", 1, 100)
    top_k: int = _setting(3, "labels per result", 1, 100)
    diagnostics_period_s: float = _setting(1.0, "how often /diagnostics is published", 0.05, 60.0)

    def __post_init__(self) -> None:
        validate(self)
        if self.local_providers not in PROVIDER_CHOICES:
            raise ConfigError(f"setting 'local_providers' must be one of {list(PROVIDER_CHOICES)}, "
                              f"got {self.local_providers!r}")


@dataclass(frozen=True)
class PerceptionConfig:
    node: NodeConfig = field(default_factory=NodeConfig)
    router: RouterConfig = field(default_factory=RouterConfig)

    @classmethod
    def from_flat(cls, values: dict[str, Any]) -> PerceptionConfig:
        """Build from one flat name -> value mapping (ROS parameters, YAML); unknown names are errors."""
        known = {f.name: part for part in (NodeConfig, RouterConfig) for f in dataclasses.fields(part)}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ConfigError(f"unknown perception setting(s) {unknown}; known: {sorted(known)}")
        parts = {part: {k: v for k, v in values.items() if known[k] is part} for part in (NodeConfig, RouterConfig)}
        return cls(node=NodeConfig(**parts[NodeConfig]), router=RouterConfig(**parts[RouterConfig]))

    def flat(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self.node), **dataclasses.asdict(self.router)}


def settings() -> list[dataclasses.Field]:
    """Every setting of the node, node fields first (for declaring ROS parameters)."""
    return [*dataclasses.fields(NodeConfig), *dataclasses.fields(RouterConfig)]


def validate(config: Any) -> None:
    """Check each field's type and range; the error names the setting and what it accepts."""
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        kind = type(f.default)
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            object.__setattr__(config, f.name, float(value))
            value = float(value)
        if isinstance(value, bool) or not isinstance(value, kind):
            raise ConfigError(f"setting '{f.name}' must be {kind.__name__}, got {type(value).__name__} {value!r}")
        low, high = f.metadata.get("range", (None, None))
        if low is not None and not low <= value <= high:
            raise ConfigError(f"setting '{f.name}' = {value!r} is out of range [{low:g}, {high:g}] "
                              f"({f.metadata['description']})")

