"""YOLOX's training loss on labelled boxes (Ge et al., 2021; Megvii's yolo_head.py), on the raw
head outputs of compress/detection/yolox.py.

Assignment (SimOTA, per image, without gradients): a cell is a candidate for a box when its centre
lies inside the box or within 2.5 strides of the box centre (the centre prior). The cost of a
(box, candidate) pair is the class BCE of sqrt(class x objectness probability) against the box's
one-hot class, plus 3 x -log IoU of the decoded prediction, plus a large penalty unless the cell is
both inside the box and near its centre. Each box takes its k cheapest candidates, k = the sum of
its 10 best IoUs (at least 1); a cell claimed by several boxes keeps the cheapest.

Loss, summed and divided by the number of positive cells in the batch:
  box:        5 x (1 - IoU^2) between decoded positives and their boxes;
  objectness: BCE on every cell of every supervised image (1 on positives, 0 elsewhere);
  classes:    BCE on positives, target = one-hot class x the positive's IoU with its box.
YOLOX's extra L1 term of its last no-augmentation epochs is left out (no such phase here).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

BOX_WEIGHT = 5.0
IOU_COST_WEIGHT = 3.0
CENTER_RADIUS = 2.5  # strides around a box centre that count as its centre region
CANDIDATE_K = 10  # best IoUs summed into a box's dynamic k
OUTSIDE_COST = 1e5
STRIDE_OF_FIRST_LEVEL = 8


def flatten_levels(levels) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-level (box [N,4,H,W], obj [N,1,H,W], cls [N,C,H,W]) -> (raw box [N,A,4], obj logit [N,A],
    cls logits [N,A,C], cell xy [A,2], stride [A,1]) in the raw head's row order. The stride of a
    level is the first level's (8) times how much coarser it is."""
    boxes, objs, clss, grids, strides = [], [], [], [], []
    first = levels[0][0].shape[-1]
    for box, obj, cls in levels:
        n, _, h, w = box.shape
        boxes.append(box.flatten(2).transpose(1, 2))
        objs.append(obj.flatten(1))
        clss.append(cls.flatten(2).transpose(1, 2))
        ys, xs = torch.meshgrid(torch.arange(h, device=box.device), torch.arange(w, device=box.device),
                                indexing="ij")
        grids.append(torch.stack((xs, ys), -1).reshape(-1, 2).float())
        strides.append(torch.full((h * w, 1), STRIDE_OF_FIRST_LEVEL * first / w, device=box.device))
    return torch.cat(boxes, 1), torch.cat(objs, 1), torch.cat(clss, 1), torch.cat(grids), torch.cat(strides)


def decode(raw: torch.Tensor, grid: torch.Tensor, stride: torch.Tensor) -> torch.Tensor:
    """Raw boxes [..., A, 4] -> centre x, y, width, height in input pixels (as the export decodes)."""
    return torch.cat([(raw[..., :2] + grid) * stride, torch.exp(raw[..., 2:4]) * stride], -1)


def pairwise_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU of every (a, b) pair of centre-size boxes: [G, 4] x [P, 4] -> [G, P]."""
    a1, a2 = a[:, None, :2] - a[:, None, 2:] / 2, a[:, None, :2] + a[:, None, 2:] / 2
    b1, b2 = b[None, :, :2] - b[None, :, 2:] / 2, b[None, :, :2] + b[None, :, 2:] / 2
    inter = (torch.min(a2, b2) - torch.max(a1, b1)).clamp(min=0).prod(-1)
    return inter / (a[:, None, 2:].prod(-1) + b[None, :, 2:].prod(-1) - inter + 1e-9)


def matched_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU of row-aligned centre-size boxes [P, 4] x [P, 4] -> [P]."""
    a1, a2 = a[:, :2] - a[:, 2:] / 2, a[:, :2] + a[:, 2:] / 2
    b1, b2 = b[:, :2] - b[:, 2:] / 2, b[:, :2] + b[:, 2:] / 2
    inter = (torch.min(a2, b2) - torch.max(a1, b1)).clamp(min=0).prod(-1)
    return inter / (a[:, 2:].prod(-1) + b[:, 2:].prod(-1) - inter + 1e-16)


@torch.no_grad()
def simota_assign(gt_boxes: torch.Tensor, gt_classes: torch.Tensor, pred_boxes: torch.Tensor,
                  obj_logits: torch.Tensor, cls_logits: torch.Tensor, grid: torch.Tensor,
                  stride: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One image: gt [G, 4] centre-size px and classes [G]; predictions [A, 4] decoded, [A], [A, C].
    Returns (positive mask [A], matched gt index per positive [P], IoU per positive [P])."""
    num_cells = pred_boxes.shape[0]
    centres = (grid + 0.5) * stride  # [A, 2]
    half = gt_boxes[:, None, 2:] / 2
    offset = (centres[None] - gt_boxes[:, None, :2]).abs()  # [G, A, 2]
    in_box = (offset < half).all(-1)
    in_centre = (offset < CENTER_RADIUS * stride[None]).all(-1)
    candidate = (in_box | in_centre).any(0)  # [A]
    positive = torch.zeros(num_cells, dtype=torch.bool, device=pred_boxes.device)
    if not candidate.any():
        empty = torch.zeros(0, device=pred_boxes.device)
        return positive, empty.long(), empty
    ious = pairwise_iou(gt_boxes, pred_boxes[candidate].float())  # [G, K]
    scores = (cls_logits[candidate].float().sigmoid() * obj_logits[candidate, None].float().sigmoid()).sqrt()
    one_hot = F.one_hot(gt_classes.long(), cls_logits.shape[-1]).float()  # [G, C]
    cls_cost = F.binary_cross_entropy(scores[None].expand(len(gt_boxes), -1, -1),
                                      one_hot[:, None].expand(-1, scores.shape[0], -1), reduction="none").sum(-1)
    cost = cls_cost + IOU_COST_WEIGHT * -torch.log(ious + 1e-8) + \
        OUTSIDE_COST * ~(in_box[:, candidate] & in_centre[:, candidate])
    k = torch.topk(ious, min(CANDIDATE_K, ious.shape[1]), dim=1).values.sum(1).int().clamp(min=1)  # [G]
    rank = torch.empty_like(cost, dtype=torch.long)
    rank.scatter_(1, cost.argsort(1), torch.arange(cost.shape[1], device=cost.device).expand_as(cost).contiguous())
    matching = rank < k[:, None]  # [G, K]
    shared = matching.sum(0) > 1
    if shared.any():  # a cell claimed by several boxes goes to the cheapest
        cheapest = cost[:, shared].argmin(0)
        matching[:, shared] = False
        matching[cheapest, shared.nonzero().squeeze(1)] = True
    taken = matching.any(0)
    gt_index = matching[:, taken].float().argmax(0)
    positive[candidate.nonzero().squeeze(1)[taken]] = True
    return positive, gt_index, ious[gt_index, taken.nonzero().squeeze(1)]


def yolox_loss(levels, targets: Sequence[torch.Tensor | None]) -> tuple[torch.Tensor, dict[str, float]]:
    """`levels`: per-level (box [N,4,H,W], obj logit [N,1,H,W], cls logits [N,C,H,W]) of a batch;
    `targets[i]`: [K, 5] (class index, x1, y1, x2, y2 in input pixels) for image i, or None for an
    image that takes no part (no complete labels). Returns (loss, parts) as YOLOX sums them."""
    raw, obj, cls, grid, stride = flatten_levels(levels)
    boxes = decode(raw.float(), grid, stride)
    # zero but part of the graph: a batch without a supervised image still backpropagates
    iou_sum = obj_sum = cls_sum = obj.sum() * 0.0
    positives = 0
    for i, target in enumerate(targets):
        if target is None:
            continue
        target = torch.as_tensor(target, dtype=torch.float32, device=raw.device).reshape(-1, 5)
        obj_target = torch.zeros_like(obj[i], dtype=torch.float32)
        if len(target):
            xyxy = target[:, 1:]
            gt = torch.cat([(xyxy[:, :2] + xyxy[:, 2:]) / 2, xyxy[:, 2:] - xyxy[:, :2]], 1)
            positive, gt_index, ious = simota_assign(gt, target[:, 0], boxes[i].detach(), obj[i].detach(),
                                                     cls[i].detach(), grid, stride)
            if positive.any():
                positives += int(positive.sum())
                obj_target[positive] = 1.0
                iou = matched_iou(boxes[i][positive], gt[gt_index])
                iou_sum = iou_sum + (1 - iou ** 2).sum()
                cls_target = F.one_hot(target[gt_index, 0].long(), cls.shape[-1]).float() * ious[:, None]
                cls_sum = cls_sum + F.binary_cross_entropy_with_logits(cls[i][positive].float(), cls_target,
                                                                       reduction="sum")
        obj_sum = obj_sum + F.binary_cross_entropy_with_logits(obj[i].float(), obj_target, reduction="sum")
    norm = max(positives, 1)
    parts = {"box": BOX_WEIGHT * iou_sum / norm, "obj": obj_sum / norm, "cls": cls_sum / norm}
    return sum(parts.values()), {k: float(v.detach()) for k, v in parts.items()}
