"""The detection distillation loss: the student learns the teacher's raw head at the same input.

Per grid cell the teacher gives an objectness probability, 80 class probabilities and a box
(x, y offsets and log w, h). The loss, normalised by the teacher's total objectness (the soft
number of objects, so empty backgrounds do not drown the objects):
  objectness: BCE(student logit, teacher probability) over every cell;
  classes:    BCE(student logits, teacher probabilities), weighted by the teacher's objectness;
  box:        L1 between the raw box outputs, weighted by the teacher's objectness.
It uses no labels, so every coco/train image counts, whatever its label status.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

BOX_WEIGHT = 5.0  # YOLOX weighs its box loss 5x; the raw offsets are O(1) like the BCE terms


def to_input(batch: np.ndarray, dev: torch.device) -> torch.Tensor:
    """uint8 NHWC BGR -> float32 NCHW 0-255, what the exported graph's cast does."""
    return torch.from_numpy(batch).to(dev).permute(0, 3, 1, 2).float()


def head_outputs(model: nn.Module, x: torch.Tensor):
    """(neck features, per-level (box, objectness logit, class logits)) of a YOLOX."""
    feats = model.backbone(x)
    return feats, model.head.forward_levels(feats)


def distill_loss(student, teacher) -> tuple[torch.Tensor, dict[str, float]]:
    """`student`/`teacher`: per-level (box [N,4,H,W], obj logit [N,1,H,W], cls logits [N,C,H,W])."""
    obj_loss = cls_loss = box_loss = 0.0
    weight_sum = 0.0
    for (s_box, s_obj, s_cls), (t_box, t_obj, t_cls) in zip(student, teacher, strict=True):
        t_obj_p = t_obj.sigmoid()
        obj_loss = obj_loss + F.binary_cross_entropy_with_logits(s_obj, t_obj_p, reduction="sum")
        cls_loss = cls_loss + (F.binary_cross_entropy_with_logits(s_cls, t_cls.sigmoid(), reduction="none")
                               * t_obj_p).sum()
        box_loss = box_loss + ((s_box - t_box).abs() * t_obj_p).sum()
        weight_sum = weight_sum + t_obj_p.sum()
    norm = torch.clamp(weight_sum, min=1.0)
    parts = {"obj": obj_loss / norm, "cls": cls_loss / norm, "box": BOX_WEIGHT * box_loss / norm}
    return sum(parts.values()), {k: float(v.detach()) for k, v in parts.items()}



@torch.no_grad()
def validation_loss(model: nn.Module, teacher: nn.Module, images: np.ndarray, batch_size: int = 16) -> float:
    """Mean distillation loss (no feature term) on letterboxed held-out training images, eval mode."""
    model.eval()
    dev = next(model.parameters()).device
    total = 0.0
    for start in range(0, len(images), batch_size):
        x = to_input(images[start:start + batch_size], dev)
        loss, _ = distill_loss(head_outputs(model, x)[1], head_outputs(teacher, x)[1])
        total += float(loss) * len(x)
    return total / len(images)

