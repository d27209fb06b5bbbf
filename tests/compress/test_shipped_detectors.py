"""The detectors shipped under models/ load (sha256 checked), say how they were made, and score on
coco/val_dev what their manifests recorded."""

from __future__ import annotations

import pytest

from robot_compress.compress.detection.coco_eval import evaluate_folder
from robot_compress.compress.stages.quantize_int8 import largest_int8_weight
from robot_compress.runtime.detection import detect
from robot_compress.runtime.local_backend import LocalBackend, make_session
from robot_compress.runtime.model_contract import ModelDir
from tests.conftest import MODELS

EDGE, ROBOT = "coco_yolox_nano_640", "robot_yolox_nano_320"
# FP32: the same graph on another CPU kind differs only in float rounding (kernel summation
# order), which moves a few near-tied scores; 0.3 mAP50-95 is far above that and far below any
# real change (the 640 and 416 models differ by 3.4).
FP32_BOUND = 0.3
# INT8: the fused integer kernels differ by CPU kind (docs/DEPLOY.md, INT8 on each CPU). On the
# AMD EPYC (AVX2 only) the manifest was measured on, the fused kernels score 24.40 and the graph
# computed as its ONNX definition says (unfused, the same on every CPU) 24.16; a predecessor
# differed by 0.37 on another CPU. The bound is about twice the larger gap. 7-bit weights rule out the AVX2 saturation (last test).
INT8_BOUND = 0.8


def val_dev_map(backend, shared_data) -> float:
    data = shared_data / "coco" / "val_dev"
    ids = backend.manifest.detection.category_ids
    return evaluate_folder(data, lambda image: detect(backend, [image], score_threshold=0.0)[0], ids).map50_95


@pytest.mark.parametrize("name", [EDGE, ROBOT])
def test_shipped_detector_says_how_it_was_made(name):
    manifest = ModelDir.load(MODELS / name).manifest  # raises on a sha256 mismatch
    assert manifest.task == "detection"
    size = manifest.preprocessing.input_size[0]
    assert manifest.created["command"] == (f"robot-compress convert-detector --size {size}"
                                           f"{' --int8 --bias-correction --float-head' if name == ROBOT else ''} --out models/{name}")
    assert manifest.created["cpu"] and manifest.created["time"].startswith("20")
    assert "val_dev" in manifest.metrics["map_eval_data"]
    assert manifest.metrics["map_measured"]["command"].startswith("python benchmarks/detection_accuracy.py")
    onnx_bytes = (MODELS / name / "1" / "model.onnx").stat().st_size
    assert 1_000_000 < onnx_bytes < 5_000_000
    if name == ROBOT:
        assert "coco/train" in manifest.created["quantization"]["calibration"]
        assert "val_dev" not in manifest.created["quantization"]["calibration"]


def test_edge_detector_scores_its_manifest_map(shared_data):
    backend = LocalBackend(MODELS / EDGE, threads=2)
    assert abs(val_dev_map(backend, shared_data) - backend.manifest.metrics["map50_95"]) <= FP32_BOUND


def test_robot_detector_scores_its_manifest_map(shared_data):
    """Fused kernels (what the robot runs) within INT8_BOUND; the unfused graph, the same on every
    CPU, within the FP32 bound of its recorded figure."""
    backend = LocalBackend(MODELS / ROBOT, threads=2)
    metrics = backend.manifest.metrics
    assert abs(val_dev_map(backend, shared_data) - metrics["map50_95"]) <= INT8_BOUND
    backend.session = make_session(backend.model.onnx_path, threads=2, fused=False)
    assert abs(val_dev_map(backend, shared_data) - metrics["map50_95_unfused_reference"]) <= FP32_BOUND


def test_robot_detector_int8_weights_are_7_bit():
    """As for the robot classifiers: |w| <= 64 gives the same products on AVX2 CPUs without VNNI."""
    assert largest_int8_weight(MODELS / ROBOT / "1" / "model.onnx") <= 64
