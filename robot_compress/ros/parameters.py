"""ROS parameters declared from a schema's fields (runtime/schema.py), shared by the package's nodes."""

from __future__ import annotations

from typing import Any

from pydantic.fields import FieldInfo
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.node import Node

from robot_compress.runtime.schema import choices, default_of, field_range, is_float


def descriptor(info: FieldInfo) -> ParameterDescriptor:
    """A read-only parameter's descriptor with the field's description, choices and range, so
    `ros2 param describe` shows what the node accepts (the schema checks the same at start)."""
    text = info.description or ""
    if accepted := choices(info):
        text += f" (one of: {', '.join(map(str, accepted))})"
    result = ParameterDescriptor(description=text, read_only=True)
    accepted_range = field_range(info)
    if accepted_range and accepted_range.low is not None and accepted_range.high is not None:
        low, high = accepted_range.low, accepted_range.high
        if is_float(info):
            result.floating_point_range = [FloatingPointRange(from_value=float(low), to_value=float(high))]
        else:
            result.integer_range = [IntegerRange(from_value=int(low), to_value=int(high), step=1)]
    return result


def accepts(info: FieldInfo) -> str:
    """What a parameter accepts, in words, for the error when rclpy rejects a value."""
    kind = "a float (with a decimal point)" if is_float(info) else getattr(info.annotation, "__name__", "str")
    accepted_range = field_range(info)
    return kind + (f" in {accepted_range}" if accepted_range else "") + (
        f" (one of {list(choices(info))})" if choices(info) else "")


def declare(node: Node, fields: dict[str, FieldInfo], error: type[Exception] = ValueError) -> dict[str, Any]:
    """Declare one read-only parameter per field (default, description, range) and return the values
    given; `error` names the parameter and what it accepts when rclpy refuses a value's type."""
    values = {}
    for name, info in fields.items():
        try:
            node.declare_parameter(name, default_of(info), descriptor(info))
        except Exception as exc:  # rclpy raises one of several exception types per problem
            raise error(f"parameter '{name}' rejected ({type(exc).__name__}: {exc}); it accepts "
                        f"{accepts(info)} -- {info.description}") from exc
        values[name] = node.get_parameter(name).value
    if unknown := undeclared_overrides(node):
        raise error(f"unknown parameter(s) {unknown}; {node.get_name()} has: {list(fields)}")
    return values


def undeclared_overrides(node: Node) -> list[str]:
    """Parameters given to `node` (`-p`, a parameter file, a launch file) that it never declared.

    rclpy ignores such an override, so a misspelt name would leave its setting at the default
    without a word; each node calls this after declaring its parameters and refuses to start.
    rclpy keeps the overrides in `Node._parameter_overrides` (there is no public accessor); the
    ones rclpy itself uses (use_sim_time, ...) are declared by then."""
    return sorted(name for name in node._parameter_overrides if not node.has_parameter(name))
