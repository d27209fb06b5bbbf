"""Export a YOLOX to the detection contract: uint8 NHWC input in, [N, max_det, 6] detections out.

Everything a client would otherwise do lives in the graph, with standard ONNX operators, so the
edge answers with a few hundred bytes per frame and a real Triton serves the same file:
  uint8 -> float32, NHWC -> NCHW (the pixels stay BGR 0-255, as YOLOX was trained)
  raw head -> boxes (xy + cell) * stride, exp(wh) * stride; score = objectness x best class score
  NonMaxSuppression per class (each cell keeps only its best class, like YOLOX's own postprocess)
  ScatterND + TopK: the best max_det survivors of each image, zero-padded to a fixed size.
The torch part (cast, network, decode) goes through torch.onnx; NMS and the fixed-size gather
are appended with onnx.helper, because torch has no exportable per-image NMS with a fixed output.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from robot_compress.compress.onnx_export import OPSET
from robot_compress.runtime.detection import grid_and_strides

INPUT_NAME = "images"
OUTPUT_NAME = "detections"


@dataclass(frozen=True)
class NmsSettings:
    """Baked into the graph. score_threshold here is the candidate floor (low, for mAP); a client
    filters further with the manifest's display threshold."""

    score_threshold: float = 0.001
    iou_threshold: float = 0.65
    max_det: int = 100


class _DecodedYOLOX(nn.Module):
    """uint8 NHWC BGR -> (boxes [N,A,4], per-class scores with only the best class kept [N,C,A],
    best score [N,A], best class as float [N,A])."""

    def __init__(self, model: nn.Module, size: int):
        super().__init__()
        self.model = model
        grid, stride = grid_and_strides(size)
        self.register_buffer("grid", torch.from_numpy(grid)[None])
        self.register_buffer("stride", torch.from_numpy(stride)[None])

    def forward(self, images: torch.Tensor):
        x = images.permute(0, 3, 1, 2).float()
        raw = self.model(x)
        xy = (raw[..., 0:2] + self.grid) * self.stride
        wh = torch.exp(raw[..., 2:4]) * self.stride
        boxes = torch.cat((xy - wh / 2, xy + wh / 2), dim=2)
        scores = raw[..., 4:5] * raw[..., 5:]
        best, cls = scores.max(dim=2)
        masked = torch.zeros_like(scores).scatter(2, cls.unsqueeze(2), best.unsqueeze(2))
        return boxes, masked.permute(0, 2, 1), best, cls.float()


def _append_nms(model, settings: NmsSettings):
    """Append NMS + fixed-size top-k to the decoded graph; its outputs become one [N, max_det, 6]."""
    from onnx import TensorProto, helper, numpy_helper

    g = model.graph
    boxes, masked, best, cls = (o.name for o in g.output)

    def const(name, value, dtype):
        g.initializer.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    const("nms_max", [settings.max_det], np.int64)
    const("nms_iou", [settings.iou_threshold], np.float32)
    const("nms_score", [settings.score_threshold], np.float32)
    const("idx_batch", [0], np.int64)
    const("idx_box", [2], np.int64)
    const("topk_k", [settings.max_det], np.int64)
    const("zero_f", 0.0, np.float32)
    const("axis_last", [-1], np.int64)
    const("tile4", [1, 1, 4], np.int64)
    n = helper.make_node
    g.node.extend([
        n("NonMaxSuppression", [boxes, masked, "nms_max", "nms_iou", "nms_score"], ["nms_selected"],
          center_point_box=0),
        n("Gather", ["nms_selected", "idx_batch"], ["sel_batch"], axis=1),
        n("Gather", ["nms_selected", "idx_box"], ["sel_box"], axis=1),
        n("Concat", ["sel_batch", "sel_box"], ["sel_index"], axis=1),
        n("GatherND", [best, "sel_index"], ["sel_score"]),
        n("Mul", [best, "zero_f"], ["dense_zero"]),
        n("ScatterND", ["dense_zero", "sel_index", "sel_score"], ["dense_score"]),
        n("TopK", ["dense_score", "topk_k"], ["top_score", "top_index"], axis=1, largest=1, sorted=1),
        n("Unsqueeze", ["top_index", "axis_last"], ["top_index3"]),
        n("Tile", ["top_index3", "tile4"], ["top_index4"]),
        n("GatherElements", [boxes, "top_index4"], ["top_boxes_raw"], axis=1),
        n("GatherElements", [cls, "top_index"], ["top_class_raw"], axis=1),
        n("Greater", ["top_score", "zero_f"], ["top_valid"]),
        n("Cast", ["top_valid"], ["top_valid_f"], to=TensorProto.FLOAT),
        n("Unsqueeze", ["top_valid_f", "axis_last"], ["top_valid3"]),
        n("Mul", ["top_boxes_raw", "top_valid3"], ["top_boxes"]),
        n("Unsqueeze", ["top_score", "axis_last"], ["top_score3"]),
        n("Mul", ["top_class_raw", "top_valid_f"], ["top_class"]),
        n("Unsqueeze", ["top_class", "axis_last"], ["top_class3"]),
        n("Concat", ["top_boxes", "top_score3", "top_class3"], [OUTPUT_NAME], axis=2),
    ])
    del g.output[:]
    g.output.append(helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["batch", settings.max_det, 6]))
    return model


def export_raw_onnx(model: nn.Module, path: str | Path, size: int) -> Path:
    """The bare network (float32 NCHW BGR 0-255 in, raw head out), dynamic batch: for checks."""
    path = Path(path)
    torch.onnx.export(model.eval(), (torch.zeros(1, 3, size, size),), str(path), dynamo=False,
                      opset_version=OPSET, input_names=["input"], output_names=["raw"],
                      dynamic_axes={"input": {0: "batch"}, "raw": {0: "batch"}})
    return path


def export_detector(model: nn.Module, path: str | Path, size: int, settings: NmsSettings = NmsSettings()) -> Path:
    """Write the contract graph: input `images` uint8 [N, size, size, 3] BGR letterboxed,
    output `detections` float32 [N, max_det, 6] (x1, y1, x2, y2 in input pixels, score, class)."""
    import onnx

    if size % 32:
        raise ValueError(f"input size must be a multiple of 32, got {size}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    wrapper = _DecodedYOLOX(model.eval(), size).eval()
    with tempfile.TemporaryDirectory() as tmp:
        decoded = Path(tmp) / "decoded.onnx"
        names = ["boxes", "masked_scores", "best_score", "best_class"]
        torch.onnx.export(wrapper, (torch.zeros(1, size, size, 3, dtype=torch.uint8),), str(decoded),
                          dynamo=False, opset_version=OPSET, input_names=[INPUT_NAME], output_names=names,
                          dynamic_axes={INPUT_NAME: {0: "batch"}, **{n: {0: "batch"} for n in names}})
        graph = _append_nms(onnx.load(str(decoded)), settings)
    onnx.checker.check_model(graph, full_check=True)
    onnx.save(graph, str(path))
    return path
