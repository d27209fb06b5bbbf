"""What the compression pipeline does differently for a detector: its data (coco/train images
for training, a COCO folder for mAP), its export (the detection contract, convert-detector's
graph) and its metrics (COCO mAP50-95 / mAP50 through the robot's letterbox and box mapping)."""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from robot_compress.compress.detection.data import DetectionImages, coco_entries, load_detection_images
from robot_compress.compress.detection.export import NmsSettings, export_detector
from robot_compress.runtime.model_contract import Preprocessing

CALIBRATION_BATCHES = 4  # x 16 training images: batch-norm statistics of the teacher
EXPORT_CHECK_IMAGES = 4
DEFAULT_NMS = NmsSettings()  # convert-detector's defaults
BOX_TOLERANCE_PX = 0.05
SCORE_TOLERANCE = 1e-3


@dataclass
class EvalFolder:
    """A COCO folder scored with mAP (evaluation only)."""

    folder: Path
    limit: int | None

    def __len__(self) -> int:
        return len(coco_entries(self.folder)[:self.limit])


@dataclass
class DetectionSplits:
    train: DetectionImages
    val: DetectionImages  # held out of the training folder: picks the best epoch, checks exports
    eval: EvalFolder  # reported mAP only
    spec: Preprocessing


def detection_preprocessing(size: int) -> Preprocessing:
    """The contract's input: letterboxed uint8 NHWC BGR 0-255."""
    return Preprocessing(input_size=(size, size), mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), channel_order="BGR",
                         layout="NHWC", scale=1.0, interpolation="linear")


def load_detection_splits(config, seed: int) -> DetectionSplits:
    size = config.input_size[0]
    images = load_detection_images(config.train, size, config.train_limit)
    if config.val_size >= len(images):
        raise ValueError(f"data.val_size {config.val_size} leaves no training images out of {len(images)}")
    order = np.random.default_rng(seed).permutation(len(images))
    coco_entries(config.eval)  # a folder that is not COCO fails now
    return DetectionSplits(train=images.subset(np.sort(order[config.val_size:])),
                           val=images.subset(np.sort(order[:config.val_size])),
                           eval=EvalFolder(Path(config.eval), config.eval_limit), spec=detection_preprocessing(size))


def prepare_teacher(model: nn.Module, splits: DetectionSplits) -> nn.Module:
    """Real batch-norm statistics from training images (eval outputs unchanged), so that training
    mode starts where the pretrained network is."""
    import torch

    from robot_compress.compress.detection.distill import to_input
    from robot_compress.compress.detection.yolox import calibrate_batchnorm

    images = splits.train.letterboxed(splits.spec.input_size[0], 16 * CALIBRATION_BATCHES)
    with torch.no_grad():
        return calibrate_batchnorm(model, [to_input(images[i:i + 16], torch.device("cpu"))
                                           for i in range(0, len(images), 16)])


class DetectorExportMismatch(RuntimeError):
    pass


def export_checked_detector(model: nn.Module, path: Path, splits: DetectionSplits,
                            settings: NmsSettings = DEFAULT_NMS) -> float:
    """Export to the detection contract and compare the graph's detections with a numpy decode +
    NMS of the torch raw head on held-out training images; returns the max box difference (px)."""
    from robot_compress.compress.detection.convert_command import compare_with_reference
    from robot_compress.compress.onnx_export import ExportMismatch

    size = splits.spec.input_size[0]
    model = model.cpu().eval()
    export_detector(model, path, size, settings)
    images = list(splits.val.letterboxed(size, EXPORT_CHECK_IMAGES))
    try:
        box_diff, score_diff, _ = compare_with_reference(model, path, images, size, settings)
    except ValueError as exc:
        raise ExportMismatch(f"{path}: {exc}") from exc
    if box_diff > BOX_TOLERANCE_PX or score_diff > SCORE_TOLERANCE:
        raise ExportMismatch(f"{path}: detections differ from the numpy reference (boxes {box_diff:.2e} px, "
                             f"scores {score_diff:.2e})")
    return box_diff


def coco_score(onnx_path: Path, folder: EvalFolder, threads: int = 2):
    """COCO mAP of a contract graph on a COCO folder, through the robot's letterbox and box mapping."""
    from robot_compress.compress.detection.coco_eval import evaluate_folder
    from robot_compress.runtime.detection import letterbox, to_detections
    from robot_compress.runtime.detection_contract import COCO80_CATEGORY_IDS, COCO80_NAMES
    from robot_compress.runtime.local_backend import make_session

    session = make_session(onnx_path, threads=threads)
    name, size = session.get_inputs()[0].name, session.get_inputs()[0].shape[1]
    labels = list(COCO80_NAMES)

    def run(image: np.ndarray):
        tensor, box = letterbox(image, size)
        return to_detections(session.run(None, {name: tensor[None]})[0][0], box, labels)

    return evaluate_folder(folder.folder, run, list(COCO80_CATEGORY_IDS), folder.limit)


def measure_detector(model: nn.Module, onnx_path: Path, splits: DetectionSplits, config) -> dict[str, Any]:
    from robot_compress.compress.metrics import count_macs, count_params, latency_ms

    score = coco_score(onnx_path, splits.eval)
    total, nonzero = count_params(model)
    raw = onnx_path.read_bytes()
    metrics: dict[str, Any] = {"map50_95": score.map50_95, "map50": score.map50, "eval_images": score.images,
                               "params": total, "params_nonzero": nonzero,
                               "macs": count_macs(model, splits.spec.input_size), "bytes": len(raw),
                               "bytes_gzip": len(gzip.compress(raw, compresslevel=9))}
    for threads in config.latency_threads:
        metrics[f"latency_ms_{threads}t"] = latency_ms(onnx_path, splits.spec.tensor_shape(), threads,
                                                       config.latency_warmup, config.latency_runs)
    return metrics


def quantize(source: Path, output: Path, splits: DetectionSplits, calibration_images: int, seed: int,
             reduce_range: bool) -> Path:
    """convert-detector's INT8 path, calibrated on a seeded sample of the training images."""
    from robot_compress.compress.detection.quantize import quantize_detector

    order = np.sort(np.random.default_rng(seed).permutation(len(splits.train))[:calibration_images])
    calibration = splits.train.subset(order).letterboxed(splits.spec.input_size[0])
    return quantize_detector(source, output, calibration, reduce_range=reduce_range)


def manifest_fields(splits: DetectionSplits, settings: NmsSettings = DEFAULT_NMS,
                    score_threshold: float = 0.3) -> dict[str, Any]:
    """The detection-specific Manifest fields (as convert-detector writes them)."""
    from robot_compress.runtime.detection_contract import COCO80_CATEGORY_IDS, COCO80_NAMES, DetectionSpec
    from robot_compress.runtime.model_contract import TensorSpec

    size = splits.spec.input_size[0]
    return {"labels": list(COCO80_NAMES),
            "input": TensorSpec(name="images", dtype="uint8", shape=(size, size, 3)),
            "output": TensorSpec(name="detections", dtype="float32", shape=(settings.max_det, 6)),
            "preprocessing": splits.spec, "task": "detection",
            "detection": DetectionSpec(score_threshold=score_threshold,
                                       nms_score_threshold=settings.score_threshold,
                                       iou_threshold=settings.iou_threshold, max_detections=settings.max_det,
                                       category_ids=list(COCO80_CATEGORY_IDS))}
