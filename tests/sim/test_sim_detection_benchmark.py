"""benchmarks/sim_detection_accuracy.py: every model answers every simulated frame and is scored
against the same ground truth; a model that cannot be scored is refused before any rendering."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import REPO

BENCHMARK = REPO / "benchmarks" / "sim_detection_accuracy.py"
EDGE, ROBOT = REPO / "models" / "coco_yolox_nano_640", REPO / "models" / "robot_yolox_nano_320"


def test_both_shipped_detectors_are_scored_on_the_same_frames(tmp_path):
    out = tmp_path / "sim.json"
    done = subprocess.run([sys.executable, str(BENCHMARK), str(EDGE), str(ROBOT), "--seconds", "3", "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["settings"]["frames"] == 15 and report["cpu"]
    assert report["truth_boxes"] > 0
    assert report["truth_small"] + report["truth_medium"] + report["truth_large"] == report["truth_boxes"]
    rows = {row["model"]: row for row in report["models"]}
    assert set(rows) == {"coco_yolox_nano_640", "robot_yolox_nano_320"}
    assert rows["coco_yolox_nano_640"]["boxes_kept"] > 0  # the boards' photos are there to be found
    for row in rows.values():
        assert 0.0 <= row["map50_95"] <= row["map50"] <= 100.0, row
        assert row["latency_p50_ms"] > 0
    assert "coco_yolox_nano_640" in done.stdout and "robot_yolox_nano_320" in done.stdout


def test_a_classifier_is_refused_before_the_simulation_starts(tmp_path):
    done = subprocess.run([sys.executable, str(BENCHMARK), str(EDGE), str(REPO / "models" / "cifar10_resnet20"),
                           "--out", str(tmp_path / "sim.json")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "a classification model, not a detection model" in done.stderr, done.stderr
    assert "rendering" not in done.stderr and not (tmp_path / "sim.json").exists()


def test_the_same_model_twice_is_refused_rather_than_one_row_silently_lost(tmp_path):
    done = subprocess.run([sys.executable, str(BENCHMARK), str(ROBOT), str(ROBOT), "--out", str(tmp_path / "sim.json")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "a second model named 'robot_yolox_nano_320'" in done.stderr, done.stderr
