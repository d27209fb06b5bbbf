"""convert-detector: a YOLOX export becomes a detection model directory whose graph decodes and
suppresses exactly like the numpy reference, on real COCO images."""

from __future__ import annotations

import json
import shutil

import cv2
import numpy as np
import pytest

from robot_compress.cli import main
from robot_compress.compress.detection.convert_command import compare_with_reference
from robot_compress.compress.detection.export import NmsSettings
from robot_compress.compress.detection.yolox import yolox_nano_from_onnx
from robot_compress.runtime.detection import Letterbox, letterbox, to_detections
from robot_compress.runtime.errors import ManifestError
from robot_compress.runtime.local_backend import make_session
from robot_compress.runtime.model_contract import ModelDir
from tests.compress.conftest import DETECTOR_SIZE
from tests.conftest import SMALL_MODEL

SIZE = DETECTOR_SIZE


def _val_images(shared_data, count):
    folder = shared_data / "coco" / "val_dev" / "images"
    return [cv2.imread(str(p)) for p in sorted(folder.iterdir())[:count]]


def test_directory_follows_the_detection_contract(detector_dir):
    model = ModelDir.load(detector_dir)
    m = model.manifest
    assert m.task == "detection"
    assert (m.input.dtype, m.input.shape) == ("uint8", (SIZE, SIZE, 3))
    assert (m.output.dtype, m.output.shape) == ("float32", (100, 6))
    assert m.preprocessing.channel_order == "BGR" and m.preprocessing.layout == "NHWC"
    assert m.detection.pad_value == 114 and m.detection.iou_threshold == 0.65
    assert len(m.labels) == 80 and len(m.detection.category_ids) == 80 and m.detection.category_ids[-1] == 90
    assert m.metrics["torch_vs_source_max_abs_diff"] < 1e-3
    assert "convert-detector" in m.created["command"]
    assert model.config.input[0].data_type == 2  # TYPE_UINT8: the wire carries bytes, not floats
    ops = {node.op_type for node in __import__("onnx").load(str(model.onnx_path)).graph.node}
    assert {"NonMaxSuppression", "TopK", "ScatterND", "Cast"} <= ops


def test_graph_equals_numpy_decode_and_nms_on_real_images(detector_dir, weights, shared_data):
    model = yolox_nano_from_onnx(weights)
    images = [letterbox(img, SIZE)[0] for img in _val_images(shared_data, 6)]
    box_diff, score_diff, compared = compare_with_reference(
        model, ModelDir.load(detector_dir).onnx_path, images, SIZE, NmsSettings())
    print(f"graph vs numpy on 6 val_dev images at {SIZE}: {compared} boxes, box {box_diff:.2e} px, "
          f"score {score_diff:.2e}")
    assert compared > 10
    assert box_diff < 0.05 and score_diff < 1e-3


def test_batched_answers_equal_single_ones_and_map_back_to_the_original_image(detector_dir, shared_data):
    model = ModelDir.load(detector_dir)
    session = make_session(model.onnx_path)
    originals = _val_images(shared_data, 3)
    boxed = [letterbox(img, SIZE) for img in originals]
    found = 0
    batch = session.run(None, {"images": np.stack([b[0] for b in boxed])})[0]
    for i, (tensor, box) in enumerate(boxed):
        single = session.run(None, {"images": tensor[None]})[0][0]
        np.testing.assert_allclose(batch[i], single, atol=1e-3)
        detections = to_detections(single, box, model.manifest.labels, score_threshold=0.3)
        found += len(detections)
        h, w = originals[i].shape[:2]
        for d in detections:
            assert 0 <= d.x1 <= d.x2 <= w and 0 <= d.y1 <= d.y2 <= h and d.score > 0.3
        assert [d.score for d in detections] == sorted((d.score for d in detections), reverse=True)
    assert found >= 3, "these images hold confident objects"
    padding = batch[0][batch[0][:, 4] == 0]
    assert not padding.any(), "rows past the detections are all zero"


def test_to_detections_undoes_the_letterbox_scale():
    rows = np.zeros((3, 6), np.float32)
    rows[0] = (10, 20, 110, 220, 0.9, 2)
    rows[1] = (0, 0, 400, 400, 0.2, 0)  # below the threshold
    out = to_detections(rows, Letterbox(ratio=0.5, height=300, width=500), ["a", "b", "c"], 0.3)
    assert len(out) == 1
    d = out[0]
    assert (d.x1, d.y1, d.x2, d.y2, d.label) == (20, 40, 220, 300, "c")  # y2 440 clipped to the height


def test_letterbox_keeps_aspect_and_pads_with_114():
    image = np.full((100, 200, 3), 7, np.uint8)
    out, box = letterbox(image, 320)
    assert out.shape == (320, 320, 3) and box.ratio == 1.6
    assert (out[:160, :320] == 7).all() and (out[160:] == 114).all()


@pytest.mark.parametrize("edit,message", [
    (lambda d: d["detection"].pop("iou_threshold"), "'detection.iou_threshold'"),
    (lambda d: d["detection"].update(score_threshold=1.5), "'detection.score_threshold' must be"),
    (lambda d: d.pop("detection"), "'detection'"),
    (lambda d: d["output"].update(shape=[50, 6]), "output must be float32 of shape \\[100, 6\\]"),
    (lambda d: d["input"].update(dtype="float32"), "input must be uint8"),
    (lambda d: d["detection"].update(category_ids=[1, 2]), "category_ids'? must be 80 integers"),
    (lambda d: d.update(task="segmentation"), "'task' must be one of"),
])
def test_a_bad_detection_manifest_names_the_field(detector_dir, tmp_path, edit, message):
    copy = tmp_path / "bad"
    shutil.copytree(detector_dir, copy)
    path = copy / "manifest.json"
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))
    with pytest.raises(ManifestError, match=message):
        ModelDir.load(copy)


def test_classification_manifests_have_no_detection_section():
    manifest = ModelDir.load(SMALL_MODEL).manifest
    assert manifest.task == "classification" and manifest.detection is None
    assert "detection" not in manifest.to_json()


def test_convert_detector_refuses_a_bad_threshold(tmp_path, capsys):
    assert main(["convert-detector", "--size", "320", "--out", str(tmp_path / "x"), "--iou-threshold", "2"]) == 2
    assert "--iou-threshold must be between 0 and 1" in capsys.readouterr().err


def test_int8_body_keeps_decode_and_nms_float_and_agrees_with_fp32(detector_dir, weights, shared_data, tmp_path):
    import onnx

    out = tmp_path / "robot_yolox_nano_320"
    code = main(["convert-detector", "--size", str(SIZE), "--weights", str(weights), "--out", str(out), "--int8",
                 "--check-images", str(shared_data / "coco" / "train" / "images"), "--check-count", "4",
                 "--calibration-images", str(shared_data / "coco" / "train" / "images"), "--calibration-count", "8"])
    assert code == 0
    model = ModelDir.load(out)
    assert model.manifest.created["quantization"]["format"] == "QDQ static"
    graph = onnx.load(str(model.onnx_path)).graph
    quantized = {n.input[0] for n in graph.node if n.op_type == "QuantizeLinear"}
    assert len(quantized) > 50
    decode_inputs = {i for n in graph.node if n.op_type in ("NonMaxSuppression", "Exp") for i in n.input}
    assert not any(n.op_type == "DequantizeLinear" and n.output[0] in decode_inputs for n in graph.node)
    batch = np.stack([letterbox(img, SIZE)[0] for img in _val_images(shared_data, 4)])
    fp32 = make_session(ModelDir.load(detector_dir).onnx_path).run(None, {"images": batch})[0]
    int8 = make_session(model.onnx_path).run(None, {"images": batch})[0]
    change = float(np.abs(fp32[:, :10, 4] - int8[:, :10, 4]).mean())
    print(f"INT8 vs FP32 mean |top-10 score change| on 4 val_dev images: {change:.3f}")
    assert change < 0.1
    assert int8[:, 0, 4].max() > 0.5, "confident objects are still found"


def test_calibrating_on_the_evaluation_split_is_refused(tmp_path, shared_data, capsys):
    code = main(["convert-detector", "--size", "320", "--out", str(tmp_path / "x"), "--int8",
                 "--calibration-images", str(shared_data / "coco" / "val_dev" / "images")])
    assert code == 2
    assert "is the evaluation split" in capsys.readouterr().err
