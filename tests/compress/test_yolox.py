"""The torch YOLOX-nano rebuilt from the shipped ONNX export: same outputs, trainable, any size."""

from __future__ import annotations

import cv2
import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch import nn

from robot_compress.compress.detection.yolox import (
    BaseConv,
    calibrate_batchnorm,
    load_onnx_weights,
    yolox_nano,
    yolox_nano_from_onnx,
)
from robot_compress.runtime.detection import letterbox

IMAGES = ("000000000139.jpg", "000000005001.jpg", "000000006818.jpg")


@pytest.fixture(scope="module")
def onnx_path(shared_data):
    return shared_data / "weights" / "yolox_nano-e8af0749.onnx"


@pytest.fixture(scope="module")
def model(onnx_path):
    return yolox_nano_from_onnx(onnx_path)


def test_raw_outputs_match_the_onnx_file_on_real_images(model, onnx_path, shared_data):
    batch = np.stack([letterbox(cv2.imread(str(shared_data / "coco" / "val_dev" / "images" / name)), 416)[0]
                      for name in IMAGES]).transpose(0, 3, 1, 2).astype(np.float32)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    expected = np.concatenate([session.run(None, {"images": x[None]})[0] for x in batch])
    with torch.no_grad():
        actual = model(torch.from_numpy(batch)).numpy()
    diff = float(np.abs(actual - expected).max())
    print(f"max abs diff torch vs ONNX at 416 on {len(IMAGES)} val_dev images: {diff:.2e}")
    assert actual.shape == (3, 3549, 85)
    assert diff < 1e-3
    assert expected[..., 4].max() > 0.5  # real objects found, so the comparison covers confident rows


@pytest.mark.parametrize("size,cells", [(320, 2100), (640, 8400)])
def test_builds_at_other_input_sizes(model, size, cells):
    with torch.no_grad():
        assert model(torch.zeros(1, 3, size, size)).shape == (1, cells, 85)


def test_batch_norms_are_restored_and_the_model_trains(onnx_path):
    model = yolox_nano_from_onnx(onnx_path)
    base_convs = [m for m in model.modules() if isinstance(m, BaseConv)]
    assert len(base_convs) == 104 and all(isinstance(m.bn, nn.BatchNorm2d) for m in base_convs)
    assert sum(p.numel() for p in model.parameters()) == 912_159
    model.train()
    optimiser = torch.optim.SGD(model.parameters(), lr=0.01)
    x = torch.rand(2, 3, 64, 64) * 255
    levels = model.head.forward_levels(model.backbone(x))
    loss = sum(reg.mean() + obj.mean() + cls.mean() for reg, obj, cls in levels)  # each predictor bias: grad 1
    loss.backward()
    before = model.head.obj_preds[0].bias.detach().clone()
    optimiser.step()
    assert torch.allclose(model.head.obj_preds[0].bias, before - 0.01)
    assert all(m.bn.weight.grad is not None for m in base_convs)


def test_an_onnx_of_another_architecture_is_refused_by_name(tmp_path):
    other = tmp_path / "other.onnx"
    torch.onnx.export(nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU()), (torch.zeros(1, 3, 8, 8),), str(other),
                      dynamo=False)
    with pytest.raises(ValueError, match="1 convolutions, but this YOLOX has 113"):
        load_onnx_weights(yolox_nano(), other)
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"not a model")
    with pytest.raises(ValueError, match="not a readable ONNX file"):
        load_onnx_weights(yolox_nano(), corrupt)


def test_calibrated_batch_norms_keep_eval_outputs_and_let_training_mode_start_close(onnx_path, shared_data):
    train = sorted((shared_data / "coco" / "train" / "images").iterdir())
    def batch(paths):
        return torch.from_numpy(np.stack([letterbox(cv2.imread(str(p)), 160)[0] for p in paths])
                                .transpose(0, 3, 1, 2).astype(np.float32))
    calibration, held_out = [batch(train[i:i + 8]) for i in range(0, 32, 8)], batch(train[40:48])
    identity = yolox_nano_from_onnx(onnx_path)
    calibrated = calibrate_batchnorm(yolox_nano_from_onnx(onnx_path), calibration)
    with torch.no_grad():
        reference = identity.eval()(held_out)
        # float32 rounding of the rescaled batch-norm parameters only (raw head outputs span about +-3;
        # the same rescaling in float64 agrees to 1e-3 because the statistics are stored as float32)
        assert float((calibrated.eval()(held_out) - reference).abs().max()) < 5e-3
        top = reference[..., 4].topk(50, dim=1).indices  # the cells that hold objects
        scores = reference[..., 4].gather(1, top)
        drift = {name: float((m.train()(held_out)[..., 4].gather(1, top) - scores).abs().mean())
                 for name, m in (("identity", identity), ("calibrated", calibrated))}
    print(f"training-mode change of the top-50 objectness scores: {drift}")
    assert drift["calibrated"] < 0.5 * drift["identity"]
    norms = torch.cat([m.conv.weight.flatten(1).norm(dim=1) for m in calibrated.modules() if isinstance(m, BaseConv)])
    assert float((norms - 1).abs().max()) < 1e-5  # one weight scale everywhere: one effective learning rate
