"""ONNX export (opset 17, dynamic batch) checked against PyTorch on real validation images."""

from __future__ import annotations

from robot_compress.compress.logit_tolerance import mismatch
from robot_compress.compress.onnx_export import ExportMismatch, export_onnx, max_abs_diff
from robot_compress.compress.onnx_names import compact_names
from robot_compress.compress.recipe import ExportOnnx
from robot_compress.compress.stages import Artefact, Context
from robot_compress.runtime.preprocess import preprocess_batch


def export_checked(model, path, ctx: Context, check_images: int, bound: float) -> float:
    """Export `model` to `path` with short tensor names; returns max |ONNX Runtime - PyTorch| over
    real images, or raises when it exceeds `bound` (scaled by the logits: compress.logit_tolerance)."""
    export_onnx(model.cpu().eval(), path, (3, *ctx.splits.spec.input_size))
    compact_names(path)
    inputs = preprocess_batch(ctx.splits.val.images[:check_images], "rgb8", ctx.splits.spec)
    diff, expected = max_abs_diff(model, path, inputs)
    if problem := mismatch(diff, bound, expected):
        raise ExportMismatch(f"{path}: ONNX Runtime differs from PyTorch {problem} on {len(inputs)} validation images")
    return diff


def run(params: ExportOnnx, artefact: Artefact, ctx: Context) -> Artefact:
    path = ctx.stage_dir / "model.onnx"
    if ctx.recipe.task == "detection":
        from robot_compress.compress.detection.task import export_checked_detector

        diff = export_checked_detector(artefact.model, path, ctx.splits)
        print(f"export_onnx: detection contract graph; max box |graph - numpy decode| {diff:.2e} px")
        return Artefact(artefact.model, onnx=path, info={"max_abs_diff": diff})
    diff = export_checked(artefact.model, path, ctx, params.check_images, params.max_abs_diff)
    print(f"export_onnx: max |ONNX - PyTorch| on {params.check_images} validation images: {diff:.2e}")
    return Artefact(artefact.model, onnx=path, info={"max_abs_diff": diff})
