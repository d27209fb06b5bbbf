"""`robot-compress compress` on a YOLOX-nano recipe: a tiny real run on coco/train images (the
pipeline, not a result), the pruned detector's structure, and recipes refused before training."""

from __future__ import annotations

import copy
import json
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch
import yaml

from robot_compress.compress.recipe import RecipeError, parse_recipe
from robot_compress.runtime.detection import detect
from robot_compress.runtime.local_backend import LocalBackend
from robot_compress.runtime.model_contract import ModelDir

SIZE = 160


@pytest.fixture
def detector_recipe(shared_data):
    def make(stages: list[dict], **data) -> dict:
        return {"name": "tiny_detector", "seed": 0,
                "teacher": {"kind": "yolox", "arch": "yolox_nano",
                            "checkpoint": str(shared_data / "weights" / "yolox_nano-e8af0749.onnx")},
                "data": {"train": str(shared_data / "coco" / "train"), "eval": str(shared_data / "coco" / "val_dev"),
                         "train_limit": 12, "val_size": 4, "eval_limit": 6, "batch_size": 4,
                         "input_size": [SIZE, SIZE], **data},
                "metrics": {"latency_runs": 5, "latency_warmup": 1, "latency_threads": [1]},
                "stages": stages}
    return make


def test_a_detector_recipe_writes_a_loadable_detection_model_with_a_map_report(detector_recipe, tmp_path,
                                                                                shared_data):
    stages = [{"stage": "prune_structured", "ratio": 0.5, "importance": "contribution"},
              {"stage": "distill", "epochs": 1, "lr": 0.002, "alpha": 1.0, "feature_weight": 0.1},
              {"stage": "export_onnx"}, {"stage": "quantize_int8", "calibration_images": 8}]
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(detector_recipe(stages)))
    out, work = tmp_path / "models" / "tiny_detector", tmp_path / "work"
    result = subprocess.run([sys.executable, "-m", "robot_compress.cli", "compress", str(recipe), "--out", str(out),
                             "--work-dir", str(work), "--threads", "1"], capture_output=True, text=True, timeout=480)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "mAP50-95" in result.stdout
    model = ModelDir.load(out)
    manifest = model.manifest
    assert manifest.task == "detection" and manifest.input.dtype == "uint8"
    assert manifest.input.shape == (SIZE, SIZE, 3) and manifest.output.shape == (100, 6)
    assert len(manifest.labels) == 80 and manifest.source["model"] == "yolox_nano"
    stages_metrics = manifest.metrics["stages"]
    assert list(stages_metrics) == ["teacher", "01_prune_structured", "02_distill", "03_export_onnx",
                                    "04_quantize_int8"]
    teacher = stages_metrics["teacher"]
    assert teacher["eval_images"] == 6 and teacher["map50_95"] > 5  # the pretrained detector finds objects
    assert 0 <= stages_metrics["04_quantize_int8"]["map50"] <= 100
    assert stages_metrics["01_prune_structured"]["params"] < 0.52 * teacher["params"]
    assert stages_metrics["04_quantize_int8"]["bytes"] < stages_metrics["03_export_onnx"]["bytes"] / 1.5
    assert all(m["latency_ms_1t"]["p50"] > 0 and m["macs"] for m in stages_metrics.values())
    history = json.loads((work / "02_distill" / "metrics.json").read_text())["history"]
    assert len(history) == 1 and {"loss_obj", "loss_cls", "loss_box", "loss_feature"} <= set(history[0])
    report = (out / "report.md").read_text()
    assert "mAP50-95" in report and "04_quantize_int8" in report and (out / "pareto.png").is_file()
    # the written model answers through the robot's own detection path
    image = cv2.imread(str(shared_data / "coco" / "val_dev" / "images" / "000000000139.jpg"))
    found = detect(LocalBackend(out), [image], score_threshold=0.0)[0]
    assert all(0 <= d.x1 <= d.x2 <= image.shape[1] and 0 <= d.class_id < 80 for d in found)


def test_pruning_keeps_the_head_predictors_and_gives_a_dense_detector(shared_data):
    from robot_compress.compress.detection.yolox import yolox_nano_from_onnx
    from robot_compress.compress.recipe import PruneStructured
    from robot_compress.compress.stages.prune_structured import _pruner, output_layers, recalibrate_batchnorm

    teacher = yolox_nano_from_onnx(shared_data / "weights" / "yolox_nano-e8af0749.onnx")
    model = copy.deepcopy(teacher)
    example = torch.zeros(1, 3, SIZE, SIZE)
    images = torch.rand(2, 3, SIZE, SIZE) * 255
    _pruner(model, PruneStructured(ratio=0.5), example, 0.3, 1).step()
    recalibrate_batchnorm(model, images)
    assert not model.training and model.backbone.backbone.stem.conv.bn.momentum == teacher.backbone.backbone.stem.conv.bn.momentum
    assert [m.out_channels for m in output_layers(model)] == [80, 80, 80, 4, 4, 4, 1, 1, 1]
    assert sum(p.numel() for p in model.parameters()) < 0.6 * sum(p.numel() for p in teacher.parameters())
    depthwise = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.groups > 1]
    assert depthwise and all(m.groups == m.in_channels == m.out_channels for m in depthwise)
    assert any(m.out_channels < o.out_channels for m, o in zip(depthwise, (m for m in teacher.modules()
               if isinstance(m, torch.nn.Conv2d) and m.groups > 1), strict=True))
    with torch.no_grad():
        assert model.eval()(torch.zeros(1, 3, 320, 320)).shape == (1, 2100, 85)


def test_the_fast_prune_recipe_cuts_the_high_resolution_parts_to_a_quarter(shared_data):
    """recipes/yolox_nano_prune56_fast_distill.yaml: 75% of the channels out of the stride 2-8
    layers, the rest cut to bring the whole to 56% of the parameters (widths do not depend on the
    criterion, so l2 stands in for contribution to keep this fast)."""
    from pathlib import Path

    from robot_compress.compress.detection.yolox import yolox_nano_from_onnx
    from robot_compress.compress.recipe import PruneStructured
    from robot_compress.compress.stages.prune_structured import (
        YOLOX_HIGH_RESOLUTION_PARTS,
        _pruner,
        channel_ratio_for,
        output_layers,
    )

    recipe = yaml.safe_load((Path(__file__).parents[2] / "recipes" / "yolox_nano_prune56_fast_distill.yaml").read_text())
    params = PruneStructured.model_validate(recipe["stages"][0]).model_copy(update={"importance": "l2"})
    assert set(params.part_ratios) == set(YOLOX_HIGH_RESOLUTION_PARTS) and params.round_to == 8
    teacher = yolox_nano_from_onnx(shared_data / "weights" / "yolox_nano-e8af0749.onnx")
    model = copy.deepcopy(teacher)
    example = torch.zeros(1, 3, SIZE, SIZE)
    _pruner(model, params, example, channel_ratio_for(model, params, example), 1).step()
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert 0.56 <= 1 - count(model) / count(teacher) < 0.57

    def widths(net, high: bool) -> int:
        modules = dict(net.named_modules())
        inside = {id(m) for part in YOLOX_HIGH_RESOLUTION_PARTS for m in modules[part].modules()}
        keep = {id(m) for m in output_layers(net)}
        return sum(m.out_channels for m in net.modules() if isinstance(m, torch.nn.Conv2d)
                   and (id(m) in inside) == high and id(m) not in keep)

    assert widths(model, True) <= 0.35 * widths(teacher, True)  # 25%, and 8 at least per layer
    assert widths(model, False) >= 0.6 * widths(teacher, False)


@pytest.mark.parametrize("change,message", [
    ({"stages": [{"stage": "prune_unstructured", "sparsity": 0.5}]}, "not available for a detector"),
    ({"stages": [{"stage": "distill", "epochs": 1, "temperature": 2.0}]}, "leave temperature unset"),
    ({"stages": [{"stage": "quantize_int8", "mode": "dynamic"}]}, "needs an export_onnx stage before it"),
    ({"stages": [{"stage": "export_onnx"}, {"stage": "quantize_int8", "mode": "dynamic"}]}, "static"),
    ({"data": {"input_size": [150, 150]}}, "multiple of 32"),
    ({"data": {"train": "VAL"}}, "evaluation split"),
    ({"teacher": {"kind": "yolox", "arch": "yolox_tiny"}}, "unknown YOLOX detector"),
    ({"teacher": {"kind": "yolox", "arch": "yolox_nano"}}, "needs the ONNX export"),
])
def test_a_detector_recipe_that_cannot_run_is_refused_before_training(detector_recipe, shared_data, change,
                                                                      message):
    data = detector_recipe([{"stage": "export_onnx"}])
    for key, value in change.items():
        if key == "data":
            value = {k: str(shared_data / "coco" / "val_dev") if v == "VAL" else v for k, v in value.items()}
            data["data"].update(value)
        else:
            data[key] = value
    with pytest.raises(RecipeError, match=message):
        parse_recipe(data)


def test_a_classifier_recipe_still_has_the_classification_task(tmp_path):
    x = np.zeros((4, 8, 8, 3), np.uint8)
    np.savez(tmp_path / "d.npz", x=x, y=np.zeros(4, np.uint8))
    recipe = parse_recipe({"name": "c", "teacher": {"kind": "cifar_resnet", "arch": "resnet20"},
                           "data": {"train": str(tmp_path / "d.npz"), "eval": str(tmp_path / "d.npz"), "val_size": 1},
                           "stages": [{"stage": "prune_unstructured", "sparsity": 0.5}]})
    assert recipe.task == "classification"
