"""A SIGKILLed ROS process leaves its Fast DDS shared-memory segment in /dev/shm; the clean-up
removes it, and leaves the segments of live processes alone."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from robot_compress.ros.shm_cleanup import clean_zombie_segments, in_use, segments
from robot_compress.runtime.polling import wait_until

PARTICIPANT = ("import rclpy, sys, time; rclpy.init(); node = rclpy.create_node('shm_probe'); "
               "print('up', flush=True); time.sleep(120)")


def start_participant() -> subprocess.Popen:
    child = subprocess.Popen([sys.executable, "-c", PARTICIPANT], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "up"
    return child


def own_segments(pid: int) -> set[Path]:
    """The Fast DDS segments process `pid` owns: those whose lock file it holds open. (It also maps
    the segments of every participant it talks to, which are not its own.)"""
    fd_dir = Path(f"/proc/{pid}/fd")
    opened = set()
    for fd in fd_dir.iterdir():
        try:
            opened.add(str(fd.readlink()))
        except OSError:
            continue
    return {path for path in segments() if f"{path}_el" in opened}


@pytest.mark.timeout(60)
def test_segment_of_a_killed_process_is_removed_and_live_ones_kept(ros_domain_id):
    live = start_participant()
    try:
        mine = own_segments(live.pid)
        assert mine, "the participant mapped no Fast DDS segment (shared-memory transport off?)"
        killed = start_participant()
        theirs = own_segments(killed.pid)
        assert theirs
        killed.send_signal(signal.SIGKILL)
        killed.wait(10)
        # SIGKILL leaves them behind, unlocked (another test run on this machine may clean them first)
        left = {path for path in theirs if path.exists()}
        # the lock check is itself a brief lock, so a participant starting elsewhere (Fast DDS checks
        # other segments too) can make a free segment look held for a moment: look again
        wait_until(lambda: all(not in_use(path) for path in left), 5, "the killed process's segments unlocked")
        assert all(in_use(path) for path in mine)
        removed = set(clean_zombie_segments())
        assert left <= removed and not (mine & removed)
        assert not any(path.exists() for path in theirs) and all(path.exists() for path in mine)
    finally:
        live.kill()
        live.wait(10)
    clean_zombie_segments()
