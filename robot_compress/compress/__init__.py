"""Offline compression pipeline (imports torch). Never imported by the robot-side runtime or node."""
