"""`robot-compress check-camera`: its report from plain observations, and against a real camera
process with Fast DDS' default settings."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from robot_compress.ros.check_camera_command import Observation, report
from robot_compress.runtime.transport_loss import LossSnapshot
from tests.node.conftest import REPO, TOPIC, camera_spec

PUBLISHER = {"node": "/camera", "reliability": "BEST_EFFORT", "durability": "VOLATILE", "history": "KEEP_LAST",
             "depth": "5"}


def observation(missing: int, received: int = 100) -> Observation:
    return Observation("/cam", "sensor_msgs/msg/Image", [PUBLISHER], arrivals=[i / 15 for i in range(received)],
                       sizes=[921600] * received, encoding="rgb8", width=640, height=480,
                       loss=LossSnapshot(received, missing, 0, 0, 1 / 15, "stamps"))


def test_report_recommends_the_profile_only_above_one_percent():
    text, status = report(observation(missing=1), "/share/fastdds.xml")
    assert status == 0 and "Fix:" not in text
    assert "15.0 Hz delivered" in text and "rgb8, 640x480, 900 KiB" in text
    assert "/camera: BEST_EFFORT, VOLATILE, KEEP_LAST depth 5" in text
    text, status = report(observation(missing=10), "/share/fastdds.xml")
    assert status == 1 and "9.1%" in text and "FASTRTPS_DEFAULT_PROFILES_FILE=/share/fastdds.xml" in text
    assert "/cam/compressed" in text


def test_report_without_publisher_or_frames_says_why():
    text, status = report(Observation("/cam", "", []), "p")
    assert status == 2 and "no publisher" in text
    text, status = report(Observation("/cam", "sensor_msgs/msg/Image", [PUBLISHER]), "p")
    assert status == 2 and "no frame arrived" in text


@pytest.mark.timeout(90)
def test_check_camera_against_a_default_configured_camera_process(processes, ros_domain_id, shared_data):
    camera = processes.start_spec(camera_spec(shared_data / "cifar10" / "test_dev.npz", 0, 15.0, loop=True,
                                              wait_for_truth_subscribers=0, settle_s=0.0), dds_profile=False)
    done = subprocess.run([sys.executable, "-m", "robot_compress.cli", "check-camera", TOPIC, "--seconds", "6"],
                          capture_output=True, text=True, timeout=60, cwd=REPO,
                          env={k: v for k, v in os.environ.items() if k != "FASTRTPS_DEFAULT_PROFILES_FILE"})
    out = done.stdout + done.stderr
    assert camera.poll() is None, processes.output(camera)
    assert "sensor_msgs/msg/Image" in out and "rgb8, 640x480, 900 KiB" in out, out
    assert "/sim_camera: BEST_EFFORT, VOLATILE" in out, out
    assert "Fast DDS defaults" in out, out
    received = int(re.search(r"frames +(\d+) received, ([\d.]+) Hz", out).group(1))
    rate = float(re.search(r"received, ([\d.]+) Hz", out).group(1))
    loss = float(re.search(r"\(([\d.]+)%, from sequence numbers", out).group(1))
    assert received > 5 and 1.0 < rate < 16.0, out
    assert (done.returncode, "Fix:" in out) == ((1, True) if loss > 1.0 else (0, False)), out
