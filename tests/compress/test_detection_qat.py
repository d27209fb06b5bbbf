"""Quantization-aware fine-tuning of the torch YOLOX: fake quantization where the QDQ graph
quantizes, trained against the FP32 network on real coco/train images, and the float network
it leaves behind."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from robot_compress.cli import main
from robot_compress.compress.detection.data import load_image_folder
from robot_compress.compress.detection.qat import (
    WEIGHT_QMAX,
    WeightQuant,
    correct_biases,
    held_out_loss,
    observe_ranges,
    prepare_qat,
    qat_finetune,
    strip_qat,
)
from robot_compress.compress.detection.yolox import yolox_nano_from_onnx

SIZE = 128  # small inputs keep the CPU test short; the network is the same at any multiple of 32


@pytest.fixture(scope="module")
def teacher(weights):
    torch.set_num_threads(1)
    return yolox_nano_from_onnx(weights)


@pytest.fixture(scope="module")
def train_images(shared_data):
    return load_image_folder(shared_data / "coco" / "train" / "images", SIZE, 8)


def _input(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images).permute(0, 3, 1, 2).float()


def test_weights_take_at_most_129_levels_per_channel():
    w = torch.randn(6, 4, 3, 3)
    q = WeightQuant()(w)
    for channel in range(6):
        scale = w[channel].abs().max() / WEIGHT_QMAX
        levels = torch.round(q[channel] / scale)
        assert torch.allclose(levels * scale, q[channel], atol=1e-6)
        assert levels.abs().max() <= WEIGHT_QMAX
    assert (q - w).abs().max() <= w.abs().amax(dim=(1, 2, 3)).max() / WEIGHT_QMAX / 2 + 1e-6


def test_fake_quantized_network_moves_the_answers_and_strips_back_to_float(teacher, train_images):
    x = _input(train_images.letterboxed(SIZE, 4))
    model = prepare_qat(teacher)
    assert model is not teacher
    observe_ranges(model, train_images.letterboxed(SIZE))
    with torch.no_grad():
        reference, quantized = teacher(x), model(x)
    assert 1e-3 < float((quantized - reference).abs().max()) < 50
    float_model = strip_qat(model)
    assert not hasattr(float_model, "qat_quants")
    with torch.no_grad():
        # folded batch norms compute the same function as the teacher's restored ones
        assert float((float_model(x) - reference).abs().max()) < 1e-2
    stem = float_model.backbone.backbone.stem.conv
    assert stem.conv.bias is not None and isinstance(stem.bn, torch.nn.Identity)


def test_bias_correction_brings_the_fake_quantized_network_closer_to_fp32(teacher, train_images):
    images = train_images.letterboxed(SIZE)
    model = prepare_qat(teacher)
    observe_ranges(model, images)
    before = held_out_loss(model, teacher, images)
    biases = {name: p.clone() for name, p in model.named_parameters() if name.endswith("bias")}
    correct_biases(model, images)
    changed = [name for name, p in model.named_parameters() if name in biases and not torch.equal(p, biases[name])]
    assert len(changed) > 50
    assert held_out_loss(model, teacher, images) < before


def test_fine_tuning_lowers_the_fake_quantized_networks_distillation_loss(teacher, train_images):
    held_out = train_images.letterboxed(SIZE)
    tuned, history = qat_finetune(teacher, train_images, SIZE, epochs=2, lr=1e-4, batch_size=4, calibration=8,
                                  held_out=held_out, bias_correction=False)
    assert [h["epoch"] for h in history] == [0, 1, 2]
    assert history[-1]["held_out_loss"] < history[0]["held_out_loss"]
    # the returned float network still answers like the teacher (a small fine-tuning step)
    assert held_out_loss(tuned, teacher, held_out) < history[0]["held_out_loss"]


def test_qat_needs_int8(tmp_path, capsys):
    code = main(["convert-detector", "--size", "320", "--out", str(tmp_path / "x"), "--qat-epochs", "2"])
    assert code == 2
    assert "add --int8" in capsys.readouterr().err
    assert main(["convert-detector", "--size", "320", "--out", str(tmp_path / "y"), "--bias-correction"]) == 2


def test_convert_detector_with_bias_correction_keeps_7_bit_weights(weights, shared_data, tmp_path):
    from robot_compress.compress.stages.quantize_int8 import largest_int8_weight
    from robot_compress.runtime.model_contract import ModelDir

    train = shared_data / "coco" / "train" / "images"
    out = tmp_path / "robot_bc"
    code = main(["convert-detector", "--size", "320", "--weights", str(weights), "--out", str(out), "--int8",
                 "--bias-correction", "--check-images", str(train), "--check-count", "4",
                 "--calibration-images", str(train), "--calibration-count", "8", "--qat-count", "8"])
    assert code == 0
    model = ModelDir.load(out)
    assert "bias correction" in model.manifest.created["quantization"]["before_quantizing"]
    assert largest_int8_weight(model.onnx_path) <= 64
