"""benchmarks/onnx_bytes.py on a shipped INT8 model: its parts account for the file, a model
directory is accepted, and a wrong path is refused with a message instead of a traceback."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import MODELS, REPO

SCRIPT = REPO / "benchmarks" / "onnx_bytes.py"


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=120)


def test_the_breakdown_accounts_for_the_file(tmp_path):
    out = tmp_path / "bytes.json"
    done = run(str(MODELS / "robot_small"), "--out", str(out))
    assert done.returncode == 0, done.stderr
    (sizes,) = json.loads(out.read_text()).values()
    parts = sum(size for part, size in sizes.items() if part != "file")
    assert sizes["weight int values"] > 0.7 * sizes["file"]
    assert 0.97 * sizes["file"] <= parts <= sizes["file"]  # the rest is the model's own header and opset
    assert "| weight int values |" in done.stdout


def test_a_missing_file_is_named_not_a_traceback(tmp_path):
    done = run(str(tmp_path / "nothing.onnx"))
    assert done.returncode == 2
    assert "no such ONNX file or model directory" in done.stderr and "Traceback" not in done.stderr
    done = run(str(tmp_path))  # a directory without a manifest
    assert done.returncode == 2 and "manifest.json" in done.stderr and "Traceback" not in done.stderr
