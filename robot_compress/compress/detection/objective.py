"""What a detector training step minimises: alpha x distillation + (1 - alpha) x YOLOX label loss.

alpha 1 is label-free distillation (every image counts); alpha 0 is plain fine-tuning on the
labelled images (the teacher runs only for the held-out distillation loss); between, both.

The best epoch is picked, for every alpha, by the YOLOX loss on the fully labelled held-out
training images (letterboxed, no augmentation), or by the held-out distillation loss when none of
them is labelled. The label loss scores the detections against what mAP scores them against; the
distillation loss scores closeness to the teacher, which label fine-tuning does not aim at (its
held-out distillation loss can rise while its label loss falls, and would then hand back the
untrained network). One rule for every alpha lets a distillation-vs-labels comparison pick both
arms' epochs the same way. Distillation (alpha 1) still trains without labels; the held-out labels
only choose among its epochs. Both held-out losses are recorded each epoch.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from robot_compress.compress.detection.data import DetectionImages, augmented_batch
from robot_compress.compress.detection.distill_loss import (
    distill_loss,
    head_outputs,
    to_input,
    validation_loss,
)
from robot_compress.compress.detection.yolox_loss import yolox_loss


def uses_labels(config) -> bool:
    return config.alpha < 1.0


def uses_teacher(config) -> bool:
    return config.alpha > 0.0 or config.feature_weight > 0.0


def check_labels(config, train: DetectionImages) -> None:
    """Before training: a label loss needs fully labelled training images."""
    if uses_labels(config) and len(train.labelled) == 0:
        statuses = sorted({str(e.get("label_status")) for e in train.entries})
        raise ValueError(f"alpha {config.alpha} asks for the YOLOX label loss, but none of the {len(train)} training "
                         f"images of {train.folder} is fully labelled (label_status official_full or "
                         f"converted_yolo; found {statuses}); set alpha: 1.0 for label-free distillation")


def training_batch(train: DetectionImages, indices, size: int, rng: np.random.Generator, augment: bool,
                   config) -> tuple[np.ndarray, list | None]:
    """uint8 NHWC inputs and, when the loss uses labels, their boxes (None per unlabelled image)."""
    labels = uses_labels(config)
    if augment:
        return augmented_batch(train, indices, size, rng, labels=labels) if labels else \
            (augmented_batch(train, indices, size, rng), None)
    subset = train.subset(indices)
    return subset.letterboxed(size), subset.letterboxed_boxes(size) if labels else None


def training_loss(config, student_levels, teacher_levels, targets) -> tuple[torch.Tensor, dict[str, float]]:
    """The stage's loss and its parts (`label_*` for the YOLOX terms)."""
    loss, parts = 0.0, {}
    if config.alpha > 0:
        distill, parts = distill_loss(student_levels, teacher_levels)
        loss = config.alpha * distill
    if uses_labels(config):
        label, label_parts = yolox_loss(student_levels, targets)
        loss = loss + (1 - config.alpha) * label
        parts.update({f"label_{k}": v for k, v in label_parts.items()})
    return loss, parts


def held_out_losses(model: nn.Module, teacher: nn.Module, val: DetectionImages, val_images: np.ndarray,
                    size: int) -> dict:
    """The held-out distillation and label losses, and the one that picks the best epoch."""
    distill = validation_loss(model, teacher, val_images)
    label = validation_label_loss(model, val, size)
    return {"val_loss": distill, "val_label_loss": label, "val_selected": distill if label is None else label,
            "selected_by": "distillation" if label is None else "label"}


def describe(held: dict) -> str:
    label = "n/a" if held["val_label_loss"] is None else f"{held['val_label_loss']:.4f}"
    return f"distillation loss {held['val_loss']:.4f}, label loss {label}"


@torch.no_grad()
def validation_label_loss(model: nn.Module, val: DetectionImages, size: int, batch_size: int = 16) -> float | None:
    """Mean YOLOX loss on the fully labelled held-out images (letterboxed, eval mode); None without any."""
    labelled = val.labelled
    if len(labelled) == 0:
        return None
    subset = val.subset(labelled)
    images, boxes = subset.letterboxed(size), subset.letterboxed_boxes(size)
    model.eval()
    dev = next(model.parameters()).device
    total = 0.0
    for start in range(0, len(images), batch_size):
        x = to_input(images[start:start + batch_size], dev)
        loss, _ = yolox_loss(head_outputs(model, x)[1], boxes[start:start + batch_size])
        total += float(loss) * len(x)
    return total / len(images)
