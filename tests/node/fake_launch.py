"""FAKE `launch` and `launch_ros` (not installable here: they are not on the package registry).

Each stand-in records its constructor arguments, and LaunchConfiguration.perform reads a plain
dict of launch argument values, which is enough to run launch/perception.launch.py and see the
actions it would hand to ROS launch. The real packages are used in the Docker image."""

from __future__ import annotations

import sys
import types


class Recorded:
    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs


class LaunchConfiguration:
    def __init__(self, name: str):
        self.name = name

    def perform(self, context: dict[str, str]) -> str:
        return context[self.name]


def install(monkeypatch) -> None:
    """Puts the fakes in sys.modules for the duration of one test."""
    names = {
        "launch": {"LaunchDescription": Recorded},
        "launch.actions": {name: type(name, (Recorded,), {}) for name in (
            "DeclareLaunchArgument", "ExecuteProcess", "OpaqueFunction", "SetEnvironmentVariable")},
        "launch.substitutions": {"LaunchConfiguration": LaunchConfiguration},
        "launch_ros": {},
        "launch_ros.actions": {"Node": type("Node", (Recorded,), {})},
    }
    for name, members in names.items():
        module = types.ModuleType(name)
        module.__dict__.update(members)
        monkeypatch.setitem(sys.modules, name, module)
