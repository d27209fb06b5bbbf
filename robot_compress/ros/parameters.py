"""ROS parameter descriptors shared by the package's nodes."""

from __future__ import annotations

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.node import Node


def read_only_descriptor(description: str, value_range: tuple | None = None, floating: bool = False) -> ParameterDescriptor:
    """A read-only parameter's descriptor, with its range when it has one, so `ros2 param describe`
    shows what the node accepts (it validates the same range itself at start)."""
    descriptor = ParameterDescriptor(description=description, read_only=True)
    if value_range and value_range[0] is not None:
        low, high = value_range
        if floating:
            descriptor.floating_point_range = [FloatingPointRange(from_value=float(low), to_value=float(high))]
        else:
            descriptor.integer_range = [IntegerRange(from_value=int(low), to_value=int(high), step=1)]
    return descriptor


def undeclared_overrides(node: Node) -> list[str]:
    """Parameters given to `node` (`-p`, a parameter file, a launch file) that it never declared.

    rclpy ignores such an override, so a misspelt name would leave its setting at the default
    without a word; each node calls this after declaring its parameters and refuses to start.
    rclpy keeps the overrides in `Node._parameter_overrides` (there is no public accessor); the
    ones rclpy itself uses (use_sim_time, ...) are declared by then."""
    return sorted(name for name in node._parameter_overrides if not node.has_parameter(name))
