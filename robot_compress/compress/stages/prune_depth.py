"""Depth pruning: remove whole residual blocks, so the robot runs fewer layers.

Why a second kind of structured pruning: at batch 1 on a CPU a small network's latency is set
by how many operators it runs more than by how wide they are. A ResNet-56 thinned to 4/8/16
channels is still slower than the unpruned ResNet-20 (docs/RESULTS.md, latency floor table), so
channel pruning alone cannot make a deep model several times faster.

A block is removable when it sits in an nn.Sequential and is a residual pass-through: with all
its weights zeroed it returns its (real, recorded) input unchanged, as x + F(x) does when F = 0.
Downsampling blocks and plain layers fail that test and stay. Blocks go greedily: each round
removes the block whose replacement by identity moves the model's output least (KL divergence
from the stage's input model on training images). The result is an ordinary dense model with
shorter nn.Sequential stages, ready for channel pruning and distillation.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from robot_compress.compress.data import calibration_sample, normalize
from robot_compress.compress.recipe import PruneDepth
from robot_compress.compress.stages import Artefact, Context

PASS_THROUGH_TOLERANCE = 1e-5


def _recorded_inputs(model: nn.Module, blocks: list[nn.Module], images: torch.Tensor) -> dict[int, torch.Tensor]:
    """Each block's input during one forward pass of `images`."""
    inputs: dict[int, torch.Tensor] = {}

    def record(module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        inputs.setdefault(id(module), args[0])

    hooks = [block.register_forward_pre_hook(record) for block in blocks]
    try:
        with torch.no_grad():
            model(images)
    finally:
        for hook in hooks:
            hook.remove()
    return inputs


@torch.no_grad()
def _is_pass_through(block: nn.Module, x: torch.Tensor) -> bool:
    zeroed = copy.deepcopy(block).eval()
    for tensor in list(zeroed.parameters()) + list(zeroed.buffers()):
        if tensor.is_floating_point():
            tensor.zero_()
    out, scale = zeroed(x), x.abs().max()
    return isinstance(out, torch.Tensor) and out.shape == x.shape and bool(scale > 0) and \
        bool((out - x).abs().max() <= PASS_THROUGH_TOLERANCE * scale)


def removable_blocks(model: nn.Module, images: torch.Tensor) -> list[tuple[str, nn.Sequential, nn.Module]]:
    """(name, its nn.Sequential, block) for every residual block that identity could replace."""
    candidates = [(f"{name}.{index}" if name else str(index), sequential, block)
                  for name, sequential in model.named_modules() if isinstance(sequential, nn.Sequential)
                  for index, block in enumerate(sequential) if any(True for _ in block.parameters())]
    inputs = _recorded_inputs(model, [block for _, _, block in candidates], images)
    return [(name, sequential, block) for name, sequential, block in candidates
            if id(block) in inputs and _is_pass_through(block, inputs[id(block)])]


def _position(sequential: nn.Sequential, block: nn.Module) -> int:
    return next(index for index, child in enumerate(sequential) if child is block)


@torch.no_grad()
def _divergence(model: nn.Module, images: torch.Tensor, reference: torch.Tensor) -> float:
    log_probs = F.log_softmax(model(images), dim=1)
    return float(F.kl_div(log_probs, reference, reduction="batchmean", log_target=True))


def remove_blocks(model: nn.Module, candidates: list[tuple[str, nn.Sequential, nn.Module]], images: torch.Tensor,
                  count: int) -> list[dict]:
    """Greedily delete `count` of the `candidates` from `model` (in place); returns what went, in order."""
    candidates = list(candidates)
    with torch.no_grad():
        reference = F.log_softmax(model(images), dim=1)
    removed = []
    for _ in tqdm(range(count), desc="prune_depth", leave=False):
        scores = []
        for _, sequential, block in candidates:
            position = _position(sequential, block)
            sequential[position] = nn.Identity()
            scores.append(_divergence(model, images, reference))
            sequential[position] = block
        best = int(np.argmin(scores))
        name, sequential, block = candidates.pop(best)
        del sequential[_position(sequential, block)]
        removed.append({"block": name, "kl_after": scores[best]})
        print(f"prune_depth: removed {name} (KL from the input model now {scores[best]:.4f})", flush=True)
    return removed


def run(params: PruneDepth, artefact: Artefact, ctx: Context) -> Artefact:
    model = copy.deepcopy(artefact.model).cpu().eval()
    sample = calibration_sample(ctx.splits.train, params.calibration_images, ctx.seed)
    images = normalize(torch.from_numpy(np.ascontiguousarray(sample.transpose(0, 3, 1, 2))), ctx.splits.spec)
    candidates = removable_blocks(model, images)
    if not candidates:
        raise ValueError("prune_depth: this model has no removable residual blocks (a block in an nn.Sequential "
                         "that returns its input when its weights are zero)")
    count = round(params.ratio * len(candidates))
    if count == 0:
        raise ValueError(f"prune_depth: ratio {params.ratio} of {len(candidates)} removable blocks removes none")
    removed = remove_blocks(model, candidates, images, count)
    return Artefact(model.eval(), info={"removable_blocks": len(candidates), "removed_blocks": removed})
