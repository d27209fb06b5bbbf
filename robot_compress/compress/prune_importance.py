"""Channel importance criteria for structured pruning beyond torch-pruning's built-in ones.

torch-pruning scores a group of coupled channels (a layer's outputs, its batch norm, the
columns of every layer that reads them) from the parameters alone. On a network whose weights
were rescaled without changing what it computes (a detector whose export folded the batch norms,
restored with unit-norm convolution rows), raw weights say little. These criteria score what a
channel does instead:

- `folded`: the L2 magnitude of the batch-norm-folded weights (W x gamma / sqrt(var + eps)),
  the rows a channel writes and the columns that read it: invariant to how the scale is split
  between a convolution and its batch norm.
- `activation`: torch-pruning's mean |input| of the layers that read the channel, on calibration
  images.
- `contribution`: for each layer reading the channel, the standard deviation of the channel
  over calibration images times the folded weight column that reads it, summed: what removing the
  channel changes in the reader's output once batch-norm statistics are re-estimated (a constant
  channel costs nothing then: its mean is absorbed by the reader's batch norm).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch_pruning as tp
from torch import nn

ACTIVATION_CRITERIA = ("activation", "contribution")  # these need calibration images


def folded_weight(conv: nn.Conv2d, norms: dict[nn.Conv2d, nn.BatchNorm2d]) -> torch.Tensor:
    """The convolution's weight with its following batch norm's scale folded into its rows."""
    bn = norms.get(conv)
    if bn is None:
        return conv.weight.detach()
    scale = bn.weight.detach() / (bn.running_var + bn.eps).sqrt()
    return conv.weight.detach() * scale[:, None, None, None]


def following_norms(model: nn.Module) -> dict[nn.Conv2d, nn.BatchNorm2d]:
    """Each Conv2d followed directly by a BatchNorm2d in the same container (conv -> bn layout)."""
    norms = {}
    for module in model.modules():
        children = list(module.children())
        for first, second in zip(children, children[1:], strict=False):
            if isinstance(first, nn.Conv2d) and isinstance(second, nn.BatchNorm2d) \
                    and second.num_features == first.out_channels:
                norms[first] = second
    return norms


def _is_dense_reader(layer: nn.Module) -> bool:
    return isinstance(layer, nn.Conv2d) and layer.groups == 1


class FoldedMagnitudeImportance(tp.importance.GroupMagnitudeImportance):
    """Group L2 magnitude of the batch-norm-folded convolution weights (rows written, columns read)."""

    def __init__(self, model: nn.Module):
        super().__init__(p=2, group_reduction="mean", normalizer="mean")
        self.norms = following_norms(model)

    @torch.no_grad()
    def __call__(self, group):
        scores, roots = [], []
        for i, (dep, idxs) in enumerate(group):
            layer, fn = dep.layer, dep.pruning_fn
            if not isinstance(layer, nn.Conv2d):
                continue
            weight = folded_weight(layer, self.norms)
            if fn in (tp.prune_conv_out_channels, tp.prune_depthwise_conv_out_channels):
                scores.append(weight[idxs].flatten(1).pow(2).sum(1))
            elif fn == tp.prune_conv_in_channels and layer.groups == 1:
                scores.append(weight.transpose(0, 1).flatten(1).pow(2).sum(1)[idxs])
            else:
                continue
            roots.append(group[i].root_idxs)
        if not scores:
            return None
        return self._normalize(self._reduce(scores, roots), self.normalizer)


STATS = "_prune_input_stats"  # attribute of a dense convolution: its inputs' per-channel (mean |x|, std x)


@torch.no_grad()
def measure_inputs(model: nn.Module, batches: Iterable[torch.Tensor]) -> None:
    """Record, on each dense convolution of `model`, the mean |x| and std of each input channel
    over `batches` (eval mode). A deep copy carries them, so trial cuts of a copy can rank by them;
    measure again after a cut changes the channels."""
    sums: dict[nn.Module, list[torch.Tensor]] = {}

    def record(module, inputs, _output):
        x = inputs[0].detach().double().transpose(0, 1).flatten(1)
        entry = [x.shape[1], x.abs().sum(1), x.sum(1), (x * x).sum(1)]
        if module in sums:
            entry = [a + b for a, b in zip(sums[module], entry, strict=True)]
        sums[module] = entry

    handles = [m.register_forward_hook(record) for m in model.modules() if _is_dense_reader(m)]
    model.eval()
    try:
        for batch in batches:
            model(batch)
    finally:
        for handle in handles:
            handle.remove()
    if not sums:
        raise ValueError("measure_inputs needs at least one batch and a model with dense convolutions")
    for module, (count, absolute, total, squares) in sums.items():
        mean = total / count
        std = (squares / count - mean * mean).clamp(min=0).sqrt()
        setattr(module, STATS, ((absolute / count).float(), std.float()))


def clear_inputs(model: nn.Module) -> None:
    for module in model.modules():
        if hasattr(module, STATS):
            delattr(module, STATS)


class ActivationStatsImportance(tp.importance.GroupMagnitudeImportance):
    """Scores from the inputs of the dense convolutions that read a channel, recorded by
    `measure_inputs`: `activation` = mean |x|, `contribution` = std(x) x the folded weight
    column's L2 norm; summed over the readers."""

    def __init__(self, model: nn.Module, mode: str):
        if mode not in ACTIVATION_CRITERIA:
            raise ValueError(f"unknown activation criterion {mode!r}: one of {ACTIVATION_CRITERIA}")
        super().__init__(p=2, group_reduction="sum", normalizer="mean")
        self.mode = mode
        self.norms = following_norms(model)

    @torch.no_grad()
    def __call__(self, group):
        scores, roots = [], []
        for i, (dep, idxs) in enumerate(group):
            layer, fn = dep.layer, dep.pruning_fn
            if fn != tp.prune_conv_in_channels or not _is_dense_reader(layer):
                continue
            if not hasattr(layer, STATS):
                raise RuntimeError(f"{self.mode} importance: run measure_inputs on calibration images first")
            mean_abs, std = getattr(layer, STATS)
            if len(std) != layer.in_channels:
                raise RuntimeError(f"{self.mode} importance: input statistics are stale (measured on "
                                   f"{len(std)} channels, the layer has {layer.in_channels}); measure again")
            if self.mode == "activation":
                score = mean_abs[idxs]
            else:
                column = folded_weight(layer, self.norms).transpose(0, 1).flatten(1).norm(dim=1)
                score = std[idxs] * column[idxs]
            scores.append(score)
            roots.append(group[i].root_idxs)
        if not scores:
            return None
        # torch-pruning sizes the sum by the first score: a reader behind a concatenation (the SPP's
        # conv after its pooled copies) has more input channels than the group's root, and the
        # surplus zeros made the scores the wrong length, so torch-pruning left the group whole
        reduced = self._reduce(scores, roots)[:len(group[0].idxs)]
        return self._normalize(reduced, self.normalizer)


def make_importance(name: str, model: nn.Module):
    """The torch-pruning importance object for a recipe's `importance` name."""
    if name == "bn_scale":
        return tp.importance.BNScaleImportance()
    if name == "lamp":
        return tp.importance.LAMPImportance(p=2)
    if name == "folded":
        return FoldedMagnitudeImportance(model)
    if name in ACTIVATION_CRITERIA:
        return ActivationStatsImportance(model, name)
    if name in ("l1", "l2"):
        return tp.importance.MagnitudeImportance(p=1 if name == "l1" else 2)
    raise ValueError(f"unknown importance {name!r}")
