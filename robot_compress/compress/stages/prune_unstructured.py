"""Global magnitude pruning of conv/linear weights. The zeros stay in dense tensors: the ONNX file
keeps its raw size and only its compressed (gzip) size shrinks; the report shows both."""

from __future__ import annotations

import copy

from torch import nn
from torch.nn.utils import prune

from robot_compress.compress.recipe import PruneUnstructured
from robot_compress.compress.stages import Artefact, Context
from robot_compress.compress.train import train


def run(params: PruneUnstructured, artefact: Artefact, ctx: Context) -> Artefact:
    model = copy.deepcopy(artefact.model)
    targets = [(m, "weight") for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    prune.global_unstructured(targets, pruning_method=prune.L1Unstructured, amount=params.sparsity)
    history = []
    if params.epochs:  # the masks stay attached, so pruned weights remain zero while fine-tuning
        model, history = train(model, params, ctx.splits, ctx.teacher, ctx.seed, ctx.recipe.data.batch_size,
                               ctx.recipe.data.augment, label="prune_unstructured finetune")
    for module, name in targets:
        prune.remove(module, name)
    total = sum(m.weight.numel() for m, _ in targets)
    zeros = sum(int((m.weight == 0).sum()) for m, _ in targets)
    return Artefact(model, info={"weight_sparsity": zeros / total, "history": history})
