"""Channel pruning with torch-pruning's dependency graph: the result is an ordinary dense model
with fewer channels (residual additions and depthwise convolutions keep consistent shapes).

torch-pruning's graph cannot follow the CIFAR ResNets' option-A shortcut (a strided slice plus
zero-padding of the channel dimension): the pad would be treated as an element-wise op and the
pruned model would add tensors of different widths. The shortcut is therefore first replaced by
an exactly equivalent frozen 1x1 stride-2 convolution whose weight is the 0/1 selection matrix;
the graph prunes its rows and columns together with the blocks it joins.

A YOLOX detector goes through the same graph: its depthwise convolutions are pruned with their
pointwise partners, the decoupled head's stems and branches with the neck outputs they read, and
the predictors' output channels (classes, box, objectness) are never touched, and the batch
norms get fresh statistics from training images after each cut.
"""

from __future__ import annotations

import copy

import torch
import torch_pruning as tp
from torch import nn

from robot_compress.compress.cifar_resnet import ShortcutA
from robot_compress.compress.detection.distill import (
    RECALIBRATION_IMAGES,
    recalibrate_batchnorm,
    train_detector,
)
from robot_compress.compress.detection.yolox import YOLOXHead
from robot_compress.compress.prune_importance import (
    ACTIVATION_CRITERIA,
    clear_inputs,
    make_importance,
    measure_inputs,
)
from robot_compress.compress.recipe import PruneStructured
from robot_compress.compress.stages import Artefact, Context
from robot_compress.compress.train import train

GRID_POINTS = 24  # the fallback scan when bisection misses (round_to)
SEARCH_STEPS = 8  # bisection steps for the channel ratio that meets the parameter/MAC target
TOLERANCE = 0.02  # the bisection's resolution; a bigger miss means the scores could not rank channels


def selection_conv(shortcut: ShortcutA, in_planes: int) -> nn.Conv2d:
    """The 1x1 stride-2 convolution computing exactly F.pad(x[:, :, ::2, ::2], channels +-pad)."""
    planes = in_planes + 2 * shortcut.pad
    conv = nn.Conv2d(in_planes, planes, 1, stride=2, bias=False)
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[torch.arange(in_planes) + shortcut.pad, torch.arange(in_planes), 0, 0] = 1.0
    conv.weight.requires_grad_(False)
    return conv


def replace_zero_pad_shortcuts(model: nn.Module) -> list[nn.Conv2d]:
    """Swap every option-A shortcut for its selection convolution; returns the new convolutions."""
    convs = []
    for module in list(model.modules()):
        if isinstance(module, ShortcutA):
            continue
        for name, child in module.named_children():
            if isinstance(child, ShortcutA):
                in_planes = module.conv1.in_channels  # a BasicBlock: the shortcut sees the block input
                convs.append(selection_conv(child, in_planes))
                setattr(module, name, convs[-1])
    return convs


def output_layers(model: nn.Module) -> list[nn.Module]:
    """The layers whose output channels are the model's answer and must all stay: a classifier's
    last Linear (the class count), a YOLOX's per-level class, box and objectness predictors."""
    head = getattr(model, "head", None)
    if isinstance(head, YOLOXHead):
        return [*head.cls_preds, *head.reg_preds, *head.obj_preds]
    return [[m for m in model.modules() if isinstance(m, nn.Linear)][-1]]


# The YOLOX layers that run at stride 2-8 (160x160 to 40x40 at 320), where most of the INT8 time
# goes: cutting them harder than the rest is what makes a pruned detector faster (docs/DETECTION.md).
YOLOX_HIGH_RESOLUTION_PARTS = ("backbone.backbone.stem", "backbone.backbone.dark2", "backbone.backbone.dark3",
                               "backbone.C3_p3", "head.stems.0", "head.cls_convs.0", "head.reg_convs.0")
PRUNABLE = (nn.Conv2d, nn.Linear)


def part_modules(model: nn.Module, part_ratios: dict[str, float]) -> dict[nn.Module, float]:
    """torch-pruning's pruning_ratio_dict for `part_ratios` (module name: channel ratio; the ratio
    covers every layer inside the module). A name that is not a module holding a prunable layer
    is refused with the model's top-level parts, so a typo cannot silently prune at the default."""
    modules = dict(model.named_modules())
    resolved = {}
    for name, ratio in part_ratios.items():
        module = modules.get(name)
        if module is None or not any(isinstance(m, PRUNABLE) for m in module.modules()):
            parts = ", ".join(child for child, _ in model.named_children())
            raise ValueError(f"prune_structured.part_ratios: {name!r} is not a module of this model with a "
                             f"convolution or linear layer in it; its parts are {parts} (name nested modules "
                             f"with dots, e.g. a part's child 'part.child')")
        resolved[module] = ratio
    return resolved


def _pruner(model: nn.Module, params: PruneStructured, example: torch.Tensor, channel_ratio: float,
            steps: int) -> tp.pruner.MetaPruner:
    return tp.pruner.MetaPruner(
        model, example, importance=make_importance(params.importance, model), global_pruning=params.scope == "global",
        pruning_ratio=channel_ratio, pruning_ratio_dict=part_modules(model, params.part_ratios),
        max_pruning_ratio=params.max_layer_ratio, iterative_steps=steps,
        ignored_layers=output_layers(model), round_to=params.round_to)


def _cost(model: nn.Module, example: torch.Tensor, target: str) -> float:
    macs, n_params = tp.utils.count_ops_and_params(model, example)
    return float(n_params if target == "params" else macs)


def _pruned_cost(model: nn.Module, params: PruneStructured, example: torch.Tensor, channel_ratio: float) -> float:
    trial = copy.deepcopy(model)
    _pruner(trial, params, example, channel_ratio, 1).step()
    return _cost(trial, example, params.target)


def channel_ratio_for(model: nn.Module, params: PruneStructured, example: torch.Tensor) -> float:
    """The channel pruning ratio whose one-shot result removes `params.ratio` of the parameters
    (or MACs) of `model`; torch-pruning's own ratio is per channel, not per weight.

    Bisection first. With round_to the result is not monotonic in the ratio (a layer that would
    keep fewer than round_to channels is left whole), so when bisection misses, a grid scan takes
    the smallest ratio that reaches the goal, or says how far this model can go."""
    total = _cost(model, example, params.target)
    goal, limit = (1 - params.ratio) * total, (1 - params.ratio + TOLERANCE) * total
    low, high = 0.0, params.max_layer_ratio
    for _ in range(SEARCH_STEPS):
        middle = (low + high) / 2
        if _pruned_cost(model, params, example, middle) > goal:
            low = middle
        else:
            high = middle
    if _pruned_cost(model, params, example, high) <= limit:
        return high
    grid = [params.max_layer_ratio * i / GRID_POINTS for i in range(1, GRID_POINTS + 1)]
    costs = {ratio: _pruned_cost(model, params, example, ratio) for ratio in grid}
    reaching = [ratio for ratio in grid if costs[ratio] <= limit]
    if reaching:
        return reaching[0]
    best = min(grid, key=costs.get)
    raise ValueError(f"prune_structured cannot remove {params.ratio:.0%} of the {params.target} of this model: "
                     f"at most {1 - costs[best] / total:.1%} (channel ratio {best:.2f}) with round_to "
                     f"{params.round_to} and max_layer_ratio {params.max_layer_ratio}, or the importance scores "
                     f"tie (e.g. bn_scale on an untrained model)")


def relative_to_input(params: PruneStructured, input_cost: float, teacher_cost: float) -> PruneStructured:
    """`params` with a ratio of the teacher's cost restated as a ratio of this stage's input."""
    ratio = 1 - (1 - params.ratio) * teacher_cost / input_cost
    if ratio <= 0:
        raise ValueError(f"prune_structured: the input already has {1 - input_cost / teacher_cost:.1%} fewer "
                         f"{params.target} than the teacher, at least the {params.ratio:.0%} asked for")
    return params.model_copy(update={"ratio": ratio, "relative_to": "input"})


def _calibration_images(ctx: Context) -> torch.Tensor | None:
    """Training images for recalibrate_batchnorm (detectors only: the classifiers' results predate it)."""
    if ctx.recipe.task != "detection":
        return None
    from robot_compress.compress.detection.distill import to_input

    return to_input(ctx.splits.train.letterboxed(ctx.splits.spec.input_size[0], RECALIBRATION_IMAGES),
                    torch.device("cpu"))


def _input_statistics(params: PruneStructured, calibration: torch.Tensor | None):
    """What records the activation statistics an activation criterion ranks by (nothing for the others)."""
    if params.importance not in ACTIVATION_CRITERIA:
        return lambda _model: None
    if calibration is None:
        raise ValueError(f"prune_structured importance {params.importance!r} ranks channels by their activations "
                         "on calibration images, which only detection recipes supply here; use l1, l2 or bn_scale")
    return lambda model: measure_inputs(model, calibration.split(16))


def run(params: PruneStructured, artefact: Artefact, ctx: Context) -> Artefact:
    model = copy.deepcopy(artefact.model).cpu().eval()
    replaced = replace_zero_pad_shortcuts(model)
    size = ctx.recipe.data.input_size
    example = torch.zeros(1, 3, *size)
    before = _cost(model, example, params.target)
    if params.relative_to == "teacher":
        teacher = copy.deepcopy(ctx.teacher).cpu().eval()
        replace_zero_pad_shortcuts(teacher)
        params = relative_to_input(params, before, _cost(teacher, example, params.target))
        print(f"prune_structured: removing {params.ratio:.1%} of the input's {params.target}", flush=True)
    calibration = _calibration_images(ctx)
    part_modules(model, params.part_ratios)  # a wrong name fails now, before any statistics are measured
    measure = _input_statistics(params, calibration)
    measure(model)
    ratio = channel_ratio_for(model, params, example)
    pruner = _pruner(model, params, example, ratio, params.steps)
    history = []
    for step in range(params.steps):
        if step:
            measure(model)  # the previous step changed the channels (and training their values)
        pruner.step()
        if calibration is not None:
            recalibrate_batchnorm(model, calibration)
        for conv in replaced:  # pruning rebuilt their weights as trainable Parameters
            conv.weight.requires_grad_(False)
        print(f"prune_structured step {step + 1}/{params.steps}: {_cost(model, example, params.target):,.0f} "
              f"{params.target} (from {before:,.0f})", flush=True)
        if params.epochs:
            fit = train_detector if ctx.recipe.task == "detection" else train
            model, steps_history = fit(model, params, ctx.splits, ctx.teacher, ctx.seed + step,
                                       ctx.recipe.data.batch_size, ctx.recipe.data.augment,
                                       label=f"prune step {step + 1} finetune")
            history.append(steps_history)
    goal = (1 - params.ratio) * before
    if _cost(model, example, params.target) > goal * 1.001:  # iterative re-ranking fell short: top up
        # the part ratios were applied already: the top-up ranks the whole network at one ratio
        top_up = params.model_copy(update={"ratio": 1 - goal / _cost(model, example, params.target),
                                           "part_ratios": {}})
        measure(model)
        _pruner(model, top_up, example, channel_ratio_for(model, top_up, example), 1).step()
        if calibration is not None:
            recalibrate_batchnorm(model, calibration)
        for conv in replaced:
            conv.weight.requires_grad_(False)
    clear_inputs(model)
    after = _cost(model, example, params.target)
    if 1 - after / before < params.ratio - TOLERANCE:
        raise ValueError(f"prune_structured removed only {1 - after / before:.1%} of the {params.target} "
                         f"(asked {params.ratio:.0%}): the importance scores tie (e.g. bn_scale on an untrained "
                         f"model) or max_layer_ratio {params.max_layer_ratio} is too low")
    return Artefact(model.eval(), info={"channel_ratio": ratio, "replaced_shortcuts": len(replaced),
                                        f"{params.target}_removed": 1 - after / before, "history": history})
