"""perception_node as a process: bad camera input never crashes it, bad parameters stop it with a
clear error, SIGINT stops it cleanly, and it never loads torch."""

from __future__ import annotations

import signal
import subprocess
import time

import cv2
import numpy as np
import pytest

from robot_compress.runtime.polling import wait_until
from tests.image_bombs import jpeg_bomb
from tests.node.conftest import TOPIC, image_msg, node_spec, stamp_key

pytestmark = pytest.mark.timeout(60)


def test_bad_frames_are_counted_and_the_next_good_frame_is_processed(processes, listener):
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import CompressedImage, Image

    node = processes.start_spec(node_spec(""))
    listener.wait_for_backend("local", 20)
    images = listener.node.create_publisher(Image, TOPIC, qos_profile_sensor_data)
    compressed = listener.node.create_publisher(CompressedImage, f"{TOPIC}/compressed", qos_profile_sensor_data)
    wait_until(lambda: images.get_subscription_count() and compressed.get_subscription_count(), 10,
               "the node to subscribe")
    time.sleep(0.5)  # let the node's side of the match settle too
    corrupt_jpeg = CompressedImage(format="jpeg")
    corrupt_jpeg.data = b"\xff\xd8\xff\xe0" + bytes(200)
    bad = [
        image_msg(1, encoding="16UC1"),  # unsupported encoding
        image_msg(2, height=0, width=0, step=0, data=b""),  # zero size
        image_msg(3, data=bytes(100)),  # data length != step x height
    ]
    for msg in bad:
        images.publish(msg)
        time.sleep(0.05)
    compressed.publish(corrupt_jpeg)
    time.sleep(0.05)
    wait_until(lambda: listener.snapshot("diagnostics").get("bad_input") == "4", 10, "4 bad inputs counted",
               detail=lambda: listener.snapshot("diagnostics"))

    good = image_msg(10, data=np.full((48, 64, 3), 128, np.uint8).tobytes())
    images.publish(good)
    ok, jpeg = cv2.imencode(".jpg", np.zeros((32, 32, 3), np.uint8))
    good_jpeg = CompressedImage(format="jpeg")
    good_jpeg.header.stamp.sec, good_jpeg.data = 11, jpeg.tobytes()
    compressed.publish(good_jpeg)
    results = wait_until(lambda: len(r := listener.snapshot("results")) >= 2 and r, 10, "results for the good frames")
    assert [stamp_key(r["stamp"]) for r in results] == [(10, 0), (11, 0)]
    assert all(r["backend"] == "local" and r["label"] for r in results)
    assert node.poll() is None
    diagnostics = wait_until(lambda: (d := listener.snapshot("diagnostics")).get("frames_out") == "2" and d, 5,
                             "diagnostics after the good frames")
    assert (diagnostics["frames_in"], diagnostics["bad_input"]) == ("6", "4")
    processes.stop(node)
    log = processes.output(node)
    assert log.count("bad frame skipped") == 1, log  # throttled: one line for the burst
    assert "unsupported image encoding '16UC1'" in log


def test_decompression_bomb_is_bad_input_at_once_and_memory_stays_flat(processes, listener):
    """A 30000x30000 JPEG of a few hundred bytes: counted as bad input from its header, and the
    good frame right behind it is answered; the node never allocates the declared image."""
    import psutil
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import CompressedImage

    node = processes.start_spec(node_spec(""))
    listener.wait_for_backend("local", 20)
    compressed = listener.node.create_publisher(CompressedImage, f"{TOPIC}/compressed", qos_profile_sensor_data)
    wait_until(lambda: compressed.get_subscription_count(), 10, "the node to subscribe")
    time.sleep(0.5)
    rss = psutil.Process(node.pid)
    before = rss.memory_info().rss
    bomb = CompressedImage(format="jpeg")
    bomb.header.stamp.sec, bomb.data = 20, jpeg_bomb()
    ok, jpeg = cv2.imencode(".jpg", np.zeros((32, 32, 3), np.uint8))
    good = CompressedImage(format="jpeg")
    good.header.stamp.sec, good.data = 21, jpeg.tobytes()
    compressed.publish(bomb)
    published = time.monotonic()
    compressed.publish(good)
    results = wait_until(lambda: listener.snapshot("results"), 10, "a result for the good frame")
    answered_after = time.monotonic() - published
    assert [stamp_key(r["stamp"]) for r in results] == [(21, 0)]
    wait_until(lambda: listener.snapshot("diagnostics").get("bad_input") == "1", 5, "the bomb counted as bad input",
               detail=lambda: listener.snapshot("diagnostics"))
    grown = rss.memory_info().rss - before
    assert grown < 100 << 20, f"node RSS grew by {grown >> 20} MiB"
    assert answered_after < 5.0  # decoding the bomb would take ~15 s and 5 GB
    processes.stop(node)
    assert "30000x30000" in processes.output(node)


def test_node_process_does_not_load_torch(processes, listener):
    node = processes.start_spec(node_spec(""))
    listener.wait_for_backend("local", 20)  # up: model loaded, publishers made
    with open(f"/proc/{node.pid}/maps") as f:
        maps = f.read()
    assert "onnxruntime" in maps  # the check sees the libraries the node did load
    assert "torch" not in maps, [line for line in maps.splitlines() if "torch" in line][:3]


@pytest.mark.parametrize("parameter, message", [
    ("deadline_ms:=-1.0", "parameter 'deadline_ms' rejected"),
    ("probe_period_ms:=250", "a float (with a decimal point)"),
    ("hedge_after_ms:=100.0", "hedge_after_ms (100) must be below deadline_ms (60, the classification default)"),
    ("local_model:=/nonexistent/model", "model directory /nonexistent/model does not exist"),
    ("deadline_msec:=60.0", "unknown parameter(s) ['deadline_msec']"),
])
def test_bad_parameters_stop_the_node_with_a_clear_error(ros_domain_id, parameter, message):
    from robot_compress.ros.launch_description import find_executable

    done = subprocess.run([find_executable("perception_node"), "--ros-args", "-p", parameter],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 2 and message in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


def test_blank_edge_token_stops_the_node(ros_domain_id, tmp_path):
    """The token is not a (readable) parameter: it comes from a file or the environment, and one
    that is empty or whitespace stops the node instead of turning authentication off."""
    import os

    from robot_compress.ros.launch_description import find_executable

    token_file = tmp_path / "token"
    token_file.write_text(" \n")
    env = {k: v for k, v in os.environ.items() if k != "ROBOT_COMPRESS_EDGE_TOKEN"}
    runs = [(["-p", f"edge_token_file:={token_file}"], env, f"{token_file} is empty"),
            ([], {**env, "ROBOT_COMPRESS_EDGE_TOKEN": "  "}, "$ROBOT_COMPRESS_EDGE_TOKEN is set but empty"),
            (["-p", "edge_token:=s3cret"], env, "unknown parameter(s) ['edge_token']")]
    for args, environment, message in runs:
        done = subprocess.run([find_executable("perception_node"), "--ros-args", *args], env=environment,
                              capture_output=True, text=True, timeout=30)
        assert done.returncode == 2 and message in done.stderr, done.stderr
        assert "Traceback" not in done.stderr


def test_sim_camera_refuses_a_misspelt_parameter(ros_domain_id):
    from robot_compress.ros.launch_description import find_executable

    done = subprocess.run([find_executable("sim_camera"), "--ros-args", "-p", "source:=x.npz", "-p", "rate_hz:=5.0",
                           "-p", "frame_rate:=5.0"], capture_output=True, text=True, timeout=30)
    assert done.returncode == 2 and "unknown parameter(s) ['frame_rate']" in done.stderr, done.stderr


def test_max_image_pixels_parameter_refuses_larger_frames(processes, listener):
    """A 64x48 frame is bad input under max_image_pixels:=3000, and a 32x32 one is answered."""
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image

    node = processes.start_spec(node_spec("", max_image_pixels=3000))
    listener.wait_for_backend("local", 20)
    images = listener.node.create_publisher(Image, TOPIC, qos_profile_sensor_data)
    wait_until(lambda: images.get_subscription_count(), 10, "the node to subscribe")
    time.sleep(0.5)
    images.publish(image_msg(1, data=np.full((48, 64, 3), 128, np.uint8).tobytes()))
    wait_until(lambda: listener.snapshot("diagnostics").get("bad_input") == "1", 10, "the large frame refused",
               detail=lambda: listener.snapshot("diagnostics"))
    images.publish(image_msg(2, height=32, width=32, step=96, data=np.zeros((32, 32, 3), np.uint8).tobytes()))
    results = wait_until(lambda: listener.snapshot("results"), 10, "a result for the small frame")
    assert [stamp_key(r["stamp"]) for r in results] == [(2, 0)]
    processes.stop(node)
    assert "3072 pixels is over the limit of 3000" in processes.output(node)


def test_sigint_stops_the_node_cleanly_with_its_final_tally(processes):
    node = processes.start_spec(node_spec(""))
    # the start-up line ends the constructor (~/backend is published before it)
    wait_until(lambda: "] [perception_node]: local model" in processes.output(node), 20, "the node to be up",
               interval_s=0.1)
    assert processes.stop(node, signal.SIGINT) == 0, processes.output(node)
    log = processes.output(node)
    assert "stopped: frames_in 0, frames_out 0" in log and "Traceback" not in log, log
