"""ROS parameter descriptors shared by the package's nodes."""

from __future__ import annotations

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor


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
