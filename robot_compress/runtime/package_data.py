"""Where the package's own data (config/, models/) lives: the source tree when running from a
checkout or `pip install -e`, else the installed share/robot_compress (colcon or a wheel)."""

from __future__ import annotations

import sys
from functools import cache
from pathlib import Path

PACKAGE = "robot_compress"
SOURCE_ROOT = Path(__file__).resolve().parents[2]


@cache
def share_dir() -> Path:
    if (SOURCE_ROOT / "config" / "perception.yaml").is_file():
        return SOURCE_ROOT
    try:
        from ament_index_python.packages import get_package_share_directory

        return Path(get_package_share_directory(PACKAGE))
    except (ImportError, LookupError, OSError):  # no ROS, not indexed, or AMENT_PREFIX_PATH unset
        return Path(sys.prefix) / "share" / PACKAGE


def data_path(path: str | Path) -> Path:
    """`path` as given when it exists (absolute, or relative to the working directory), else
    relative to the package's data (e.g. "models/cifar10_resnet20")."""
    path = Path(path)
    return path if path.exists() else share_dir() / path
