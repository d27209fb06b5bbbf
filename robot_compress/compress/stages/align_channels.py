"""Widen the final ONNX file's pruned channel counts to a multiple (see compress/channel_alignment)."""

from __future__ import annotations

from robot_compress.compress.channel_alignment import align_file
from robot_compress.compress.recipe import AlignChannels
from robot_compress.compress.stages import Artefact, Context
from robot_compress.runtime.preprocess import preprocess_batch


def run(params: AlignChannels, artefact: Artefact, ctx: Context) -> Artefact:
    output = ctx.stage_dir / "model.onnx"
    inputs = preprocess_batch(ctx.splits.val.images[:params.check_images], "rgb8", ctx.splits.spec)
    report = align_file(artefact.onnx, output, params.multiple, inputs, params.max_abs_diff, params.max_width)
    print(f"align_channels: {report.summary()}")
    return Artefact(artefact.model, onnx=output,
                    info={"multiple": params.multiple, "max_width": params.max_width, **report.as_record(),
                          "widths": {str(a): b for a, b in sorted(report.widths.items())}})
