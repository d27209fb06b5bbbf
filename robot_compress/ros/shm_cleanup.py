"""Remove the Fast DDS shared-memory segments of ROS processes that died without cleaning up.

Each Fast DDS participant maps a segment `/dev/shm/fastrtps_<16 hex>` (16 MiB by default) and
holds a lock on its `_el` file while alive. A SIGKILLed or crashed node leaves both behind. A
segment whose lock nobody holds belongs to no live process and is safe to delete; this is the
check `fastdds shm clean` makes too (Fast DDS's own tool also cleans port files).

    python -m robot_compress.ros.shm_cleanup        # or: fastdds shm clean
"""

from __future__ import annotations

import fcntl
import os
import re
import sys
from pathlib import Path

SHM_DIR = Path("/dev/shm")
SEGMENT = re.compile(r"^fastrtps_[0-9a-z]{16}$")


def segments(shm_dir: Path = SHM_DIR) -> list[Path]:
    try:
        return sorted(shm_dir / name for name in os.listdir(shm_dir) if SEGMENT.match(name))
    except FileNotFoundError:
        return []


def in_use(segment: Path) -> bool:
    """True while a live process holds the segment's lock file (or the lock cannot be checked)."""
    lock = segment.with_name(segment.name + "_el")
    try:
        with open(lock, "rb") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except FileNotFoundError:
        return False
    except OSError:
        return True
    return False


def clean_zombie_segments(shm_dir: Path = SHM_DIR) -> list[Path]:
    """Delete every segment (and its lock file) that no live process holds; returns them."""
    removed = []
    for segment in segments(shm_dir):
        if in_use(segment):
            continue
        for path in (segment, segment.with_name(segment.name + "_el")):
            path.unlink(missing_ok=True)
        removed.append(segment)
    return removed


def main() -> int:
    removed = clean_zombie_segments()
    print(f"removed {len(removed)} Fast DDS shared-memory segment(s) of dead processes; "
          f"{len(segments())} in use")
    return 0


if __name__ == "__main__":
    sys.exit(main())
