"""`robot-compress` as a user runs it: help, doctor, classify, in subprocesses."""

from __future__ import annotations

import json
import subprocess
import sys

import cv2
import numpy as np

from tests.conftest import REPO, SMALL_MODEL
from tests.image_bombs import jpeg_bomb

CLI = [sys.executable, "-m", "robot_compress.cli"]


def _run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], cwd=REPO, capture_output=True, text=True, timeout=timeout)


def test_help_lists_commands_and_does_not_import_torch():
    proc = subprocess.run([sys.executable, "-c", "import sys; from robot_compress.cli import main\n"
                           "try:\n    main(['--help'])\nexcept SystemExit: pass\n"
                           "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH')"],
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    assert "doctor" in proc.stdout and "classify" in proc.stdout
    assert proc.stdout.strip().endswith("NO-TORCH")


def test_every_command_has_help():
    from robot_compress.cli import COMMANDS

    for name in COMMANDS:
        proc = _run(name, "--help")
        assert proc.returncode == 0, f"{name} --help failed: {proc.stderr[-500:]}"
        assert "usage: robot-compress" in proc.stdout


def test_no_command_prints_help_and_fails():
    proc = _run()
    assert proc.returncode == 2 and "COMMAND" in proc.stdout


def test_doctor_reports_ros_with_fast_dds(ros_domain_id):
    proc = _run("doctor", "--json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout)
    assert report["robot_runtime_ok"] is True
    checks = {c["part"]: c for c in report["checks"]}
    assert checks["rclpy + RMW"]["ok"], checks["rclpy + RMW"]["detail"]
    assert "rmw_fastrtps_cpp" in checks["rclpy + RMW"]["detail"]
    assert "CPUExecutionProvider" in checks["onnxruntime"]["detail"]
    for optional in ("vision_msgs", "cv_bridge", "launch", "torchvision", "GPU", "CPU int8"):
        assert optional in checks and checks[optional]["detail"], f"{optional} not explained"
    # the pinned torchvision works for `compress` through its compat import, and doctor says so
    assert checks["torchvision"]["ok"], checks["torchvision"]["detail"]


def test_classify_prints_top5_for_a_real_image(tmp_path, cifar_test_dev):
    image_path = tmp_path / "frame.png"
    label = cifar_test_dev.label_names[int(cifar_test_dev.labels[0])]
    cv2.imwrite(str(image_path), cifar_test_dev.images[0][:, :, ::-1])
    proc = _run("classify", "--model", str(SMALL_MODEL), str(image_path))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert lines[0] == f"{image_path}:" and len(lines) == 6
    assert lines[1].split()[-1] == label  # the model gets test image 0 (a cat) right


def test_classify_bad_inputs_are_reported(tmp_path):
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG not really")
    proc = _run("classify", "--model", str(SMALL_MODEL), str(corrupt))
    assert proc.returncode == 1 and "could not decode" in proc.stderr
    proc = _run("classify", "--model", str(tmp_path / "missing_model"), str(corrupt))
    assert proc.returncode == 2 and "does not exist" in proc.stderr


def test_classify_refuses_a_decompression_bomb_and_goes_on(tmp_path):
    bomb = tmp_path / "bomb.jpg"
    bomb.write_bytes(jpeg_bomb())
    good = tmp_path / "good.png"
    cv2.imwrite(str(good), np.zeros((32, 32, 3), np.uint8))
    proc = _run("classify", "--model", str(SMALL_MODEL), str(bomb), str(good))
    assert proc.returncode == 1 and "30000x30000" in proc.stderr and "over the limit" in proc.stderr, proc.stderr
    assert f"{good}:" in proc.stdout
    proc = _run("classify", "--model", str(SMALL_MODEL), "--max-pixels", "100", str(good))
    assert proc.returncode == 1 and "32x32 = 1024 pixels is over the limit of 100" in proc.stderr
