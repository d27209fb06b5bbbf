"""Differential drive: body velocity commands to wheel speeds, their limits, and the scripted patrol."""

from __future__ import annotations

import math
from dataclasses import dataclass

# TurtleBot3 Waffle Pi limits (ROBOTIS e-Manual): 0.26 m/s, 1.82 rad/s.
MAX_LINEAR = 0.26
MAX_ANGULAR = 1.82


@dataclass(frozen=True)
class DiffDrive:
    wheel_radius: float
    wheel_separation: float

    def wheel_speeds(self, linear: float, angular: float) -> tuple[float, float]:
        """(left, right) wheel angular speeds in rad/s for a body velocity (m/s, rad/s)."""
        half = angular * self.wheel_separation / 2
        return (linear - half) / self.wheel_radius, (linear + half) / self.wheel_radius


def command_problem(linear: float, angular: float, max_linear: float = MAX_LINEAR,
                    max_angular: float = MAX_ANGULAR) -> str | None:
    """Why a cmd_vel cannot be followed (None when it can): non-finite or beyond the robot's limits."""
    for name, value, limit in (("linear.x", linear, max_linear), ("angular.z", angular, max_angular)):
        if not math.isfinite(value):
            return f"{name} is {value}"
        if abs(value) > limit:
            return f"{name}={value:g} is beyond +-{limit:g}"
    return None


@dataclass(frozen=True)
class CirclePatrol:
    """Drive counter-clockwise around a circle about the origin, steering back onto it (pure pursuit)."""
    radius: float = 2.0
    speed: float = 0.18
    lookahead: float = 0.6

    def command(self, x: float, y: float, yaw: float) -> tuple[float, float]:
        bearing = math.atan2(y, x) + self.lookahead / self.radius
        tx, ty = self.radius * math.cos(bearing), self.radius * math.sin(bearing)
        error = math.atan2(ty - y, tx - x) - yaw
        error = math.atan2(math.sin(error), math.cos(error))
        distance = math.hypot(tx - x, ty - y)
        angular = max(-MAX_ANGULAR, min(MAX_ANGULAR, 2 * self.speed * math.sin(error) / max(distance, 1e-3)))
        linear = self.speed * max(0.0, math.cos(error))
        return linear, angular
