"""Learned int8 weight rounding (AdaRound) of the torch YOLOX's quantized convolutions, on real
weights and real coco/train images."""

from __future__ import annotations

import pytest
import torch

from robot_compress.compress.detection.adaround import _capture, _float_output, adaround, round_layer
from robot_compress.compress.detection.data import load_image_folder
from robot_compress.compress.detection.qat import (
    WEIGHT_QMAX,
    WEIGHT_QMAX_FULL,
    held_out_loss,
    observe_ranges,
    prepare_qat,
    weight_scale,
)
from robot_compress.compress.detection.yolox import yolox_nano_from_onnx

SIZE = 128  # small inputs keep the CPU test short


@pytest.fixture(scope="module")
def teacher(weights):
    torch.set_num_threads(1)
    return yolox_nano_from_onnx(weights)


@pytest.fixture(scope="module")
def images(shared_data):
    return load_image_folder(shared_data / "coco" / "train" / "images", SIZE, 8).letterboxed(SIZE)


@pytest.mark.parametrize("qmax", [WEIGHT_QMAX, WEIGHT_QMAX_FULL])
def test_learnt_rounding_lowers_a_layers_output_error_and_stays_on_the_int8_grid(teacher, images, qmax):
    model = prepare_qat(teacher, qmax)
    observe_ranges(model, images)
    conv = model.backbone.backbone.dark4[1].conv1.conv  # a 1x1 convolution of the quantized body
    inputs = _capture(model, [conv], images, False, 4)[0]
    weight = conv.parametrizations.weight.original.detach().clone()
    target = _float_output(conv, weight, inputs)
    rounded, errors = round_layer(weight, conv.bias.detach(), conv, inputs, target, qmax, iterations=150)
    assert errors["learnt"] < 0.9 * errors["nearest"]
    scale = weight_scale(weight, qmax).reshape(-1, 1, 1, 1)
    levels = rounded / scale
    assert torch.allclose(levels, torch.round(levels), atol=1e-3)
    # each channel's largest weight stays at +-qmax: ONNX Runtime derives the same scale from it
    assert torch.allclose(levels.abs().amax(dim=(1, 2, 3)), torch.full((weight.shape[0],), float(qmax)))
    # learnt rounding only ever picks the step below or above
    assert float((rounded - weight).abs().max() / scale.max()) <= 1.0 + 1e-4
    assert not torch.equal(torch.round(levels), torch.round(weight / scale))


def test_adaround_brings_the_fake_quantized_network_closer_to_fp32(teacher, images):
    model = prepare_qat(teacher)
    observe_ranges(model, images)
    before = held_out_loss(model, teacher, images)
    report = adaround(model, images, iterations=20, log=lambda _line: None)
    assert len(report) == 81 and {r["kept"] for r in report} <= {"learnt", "nearest"}
    assert sum(r["kept"] == "learnt" for r in report) > 40
    assert all(r["after_bias"] <= min(r["nearest"], r["learnt"]) * 1.01 for r in report)
    assert held_out_loss(model, teacher, images) < before
