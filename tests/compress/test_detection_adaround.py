"""Learned int8 weight rounding (AdaRound) of the torch YOLOX's quantized convolutions, on real
weights and real coco/train images."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from robot_compress.compress.detection.adaround import _capture, _float_output, adaround, round_layer
from robot_compress.compress.detection.data import load_image_folder
from robot_compress.compress.detection.qat import held_out_loss, observe_ranges, prepare_qat
from robot_compress.compress.detection.weight_grid import WEIGHT_QMAX, WEIGHT_QMAX_FULL, weight_scale
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


def test_int8_weight_options_need_int8_and_valid_steps(tmp_path, capsys):
    from robot_compress.cli import main

    for extra in (["--adaround-steps", "10"], ["--int8-weights", "uint8"], ["--float-head"]):
        assert main(["convert-detector", "--size", "320", "--out", str(tmp_path / "x"), *extra]) == 2
        assert "add --int8" in capsys.readouterr().err
    assert main(["convert-detector", "--size", "320", "--out", str(tmp_path / "y"), "--int8",
                 "--adaround-steps", "-1"]) == 2
    assert "--adaround-steps must be >= 0" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["convert-detector", "--size", "320", "--out", str(tmp_path / "z"), "--int8", "--int8-weights", "int4"])
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_convert_detector_with_learnt_rounding_stores_uint8_weights_on_the_learnt_grid(weights, shared_data, tmp_path):
    """uint8 weights sit symmetric around 127 (ONNX Runtime's u8u8 kernels, no int16 saturation on
    AVX2), on the grid the learnt rounding used."""
    import onnx
    from onnx import numpy_helper

    from robot_compress.cli import main
    from robot_compress.runtime.model_contract import ModelDir

    train = shared_data / "coco" / "train" / "images"
    out = tmp_path / "robot_ada"
    code = main(["convert-detector", "--size", "320", "--weights", str(weights), "--out", str(out), "--int8",
                 "--int8-weights", "uint8", "--adaround-steps", "5", "--check-images", str(train),
                 "--check-count", "4", "--calibration-images", str(train), "--calibration-count", "4"])
    assert code == 0
    model = ModelDir.load(out)
    how = model.manifest.created["quantization"]
    assert "AdaRound" in how["before_quantizing"] and how["weights"].startswith("uint8")
    graph = onnx.load(str(model.onnx_path)).graph
    initializers = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    weight_points = [initializers[n.input[2]] for n in graph.node if n.op_type == "DequantizeLinear"
                     and initializers.get(n.input[0]) is not None and initializers[n.input[0]].ndim == 4]
    assert len(weight_points) > 50
    assert all(p.dtype == np.uint8 and (p == 127).all() for p in weight_points)
    # each output channel still reaches +-127: the scale ONNX Runtime derived is the one the rounding used
    levels = [initializers[n.input[0]].astype(np.int16) - 127 for n in graph.node if n.op_type == "DequantizeLinear"
              and initializers.get(n.input[0]) is not None and initializers[n.input[0]].ndim == 4]
    assert all((np.abs(q).reshape(len(q), -1).max(axis=1) == 127).all() for q in levels)
    assert not any(t.data_type == onnx.TensorProto.INT8 for t in graph.initializer)


def test_float_head_leaves_the_heads_convolutions_unquantized(teacher):
    from torch.nn.utils import parametrize

    from robot_compress.compress.detection.yolox import BaseConv

    def quantized(model, part):
        return [m for m in part.modules() if isinstance(m, BaseConv) and parametrize.is_parametrized(m.conv, "weight")]

    both, body_only = prepare_qat(teacher), prepare_qat(teacher, float_head=True)
    assert len(quantized(both, both.head)) == 27 and not quantized(body_only, body_only.head)
    assert len(quantized(body_only, body_only.backbone)) == len(quantized(both, both.backbone)) == 54
