"""Fine-tune under the teacher (Hinton KD, optional feature matching); alpha 0 = plain fine-tuning.
A detector learns the teacher's head outputs instead (compress/detection/distill.py)."""

from __future__ import annotations

import copy

from robot_compress.compress.recipe import Distill
from robot_compress.compress.stages import Artefact, Context
from robot_compress.compress.train import train


def run(params: Distill, artefact: Artefact, ctx: Context) -> Artefact:
    if ctx.recipe.task == "detection":
        from robot_compress.compress.detection.distill import train_detector

        model, history = train_detector(copy.deepcopy(artefact.model), params, ctx.splits, ctx.teacher, ctx.seed,
                                        ctx.recipe.data.batch_size, ctx.recipe.data.augment,
                                        checkpoint=ctx.stage_dir / "train_state.pt", label="distill")
        return Artefact(model, info={"history": history, "best_val_loss": min([h.get("val_selected", h["val_loss"]) for h in history],
                                                                               default=None)})
    model, history = train(copy.deepcopy(artefact.model), params, ctx.splits, ctx.teacher, ctx.seed,
                           ctx.recipe.data.batch_size, ctx.recipe.data.augment,
                           checkpoint=ctx.stage_dir / "train_state.pt", label="distill")
    return Artefact(model, info={"history": history, "best_val_top1": max([h["val_top1"] for h in history],
                                                                           default=None)})
