"""Every robot model shipped under models/ loads (sha256 checked), and its accuracy on the first
200 test_dev images matches the figure its manifest recorded for those images within 1 point."""

from __future__ import annotations

import numpy as np
import pytest

from robot_compress.compress.stages.quantize_int8 import largest_int8_weight
from robot_compress.runtime.evaluate import top1_accuracy
from robot_compress.runtime.local_backend import LocalBackend
from robot_compress.runtime.model_contract import ModelDir
from tests.conftest import MODELS

SHIPPED = sorted(p.name for p in MODELS.glob("robot_*") if (p / "manifest.json").is_file())
IMAGES = 200


def test_robot_models_are_shipped():
    assert {"robot_small", "robot_balanced"} <= set(SHIPPED)


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_model_loads_and_classifies(name, cifar_test_dev):
    model = ModelDir.load(MODELS / name)  # raises on a sha256 mismatch
    manifest = model.manifest
    assert manifest.recipe and manifest.created["command"].startswith("robot-compress compress")
    assert manifest.source["training_data"].endswith("train.npz")
    head = cifar_test_dev.subset(np.arange(IMAGES))
    accuracy = top1_accuracy(LocalBackend(model), head, manifest.preprocessing)
    assert abs(accuracy - manifest.metrics[f"top1_first_{IMAGES}"]) <= 0.01
    assert abs(accuracy - manifest.metrics["top1"]) <= 0.08  # 200 images vs 5000: sampling noise only


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_int8_weights_are_7_bit(name):
    """With full 8-bit weights, CI's CPU classified 3 of the 200 images differently from the build
    machine (AVX-512 VNNI). ONNX Runtime documents the cause: AVX2 kernels without VNNI add
    uint8 x int8 products in saturating int16 pairs. 7-bit weights (|w| <= 64) cannot saturate."""
    assert largest_int8_weight(MODELS / name / "1" / "model.onnx") <= 64
