"""The data-aware channel criteria on a tiny conv net whose channels are built to be useless or useful."""

from __future__ import annotations

import pytest
import torch
import torch_pruning as tp
from torch import nn

from robot_compress.compress.prune_importance import (
    ActivationStatsImportance,
    clear_inputs,
    following_norms,
    make_importance,
    measure_inputs,
)

CHANNELS = 8
USELESS = [1, 2, 5, 6]  # constant channels (large weights, zero weight on the input) or unread ones


def tiny(seed: int = 0) -> nn.Sequential:
    """conv(3->8) -> BN -> ReLU -> conv(8->4). Channels 1 and 5 give a large constant output (zero
    kernel, large BN shift and scale, as a folded export can leave them); channels 2 and 6 vary
    but the reader gives them near-zero weight. The other rows have unit norm, as
    calibrate_batchnorm leaves the detector's."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Conv2d(3, CHANNELS, 3, padding=1, bias=False), nn.BatchNorm2d(CHANNELS), nn.ReLU(),
                          nn.Conv2d(CHANNELS, 4, 1))
    conv, bn, _, reader = model
    with torch.no_grad():
        conv.weight.div_(conv.weight.flatten(1).norm(dim=1)[:, None, None, None])
        bn.weight.uniform_(0.5, 1.5)
        conv.weight[[1, 5]] = 0.0
        bn.weight[[1, 5]] = 5.0
        bn.bias[[1, 5]] = 20.0
        reader.weight[:, [2, 6]] *= 1e-3
    return model.eval()


def batches() -> list[torch.Tensor]:
    torch.manual_seed(1)
    return [torch.randn(4, 3, 8, 8) for _ in range(3)]


def kept_channels(model: nn.Module, name: str) -> list[int]:
    """Prune half of the first conv's channels with criterion `name`; which of the original survive."""
    original = model[3].weight.detach().clone()
    importance = make_importance(name, model)
    if isinstance(importance, ActivationStatsImportance):
        measure_inputs(model, batches())
    tp.pruner.MetaPruner(model, torch.zeros(1, 3, 8, 8), importance=importance, pruning_ratio=0.5,
                         ignored_layers=[model[3]]).step()
    kept = model[3].weight.detach()
    return sorted(next(i for i in range(CHANNELS) if torch.equal(original[:, i], kept[:, j]))
                  for j in range(kept.shape[1]))


def test_contribution_removes_the_constant_and_the_unread_channels():
    assert kept_channels(tiny(), "contribution") == [c for c in range(CHANNELS) if c not in USELESS]


def test_weight_magnitude_keeps_a_constant_channel_that_contribution_removes():
    """The reason for the data-aware criterion: a channel with a large constant output reads as
    important to the weights (a large BN scale, ordinary reader columns)."""
    kept = kept_channels(tiny(), "l2")
    assert set(kept) & set(USELESS), kept


def test_folded_magnitude_is_invariant_to_moving_scale_between_conv_and_bn():
    model = tiny()
    conv, bn = model[0], model[1]
    group = tp.DependencyGraph().build_dependency(model, torch.zeros(1, 3, 8, 8)).get_pruning_group(
        conv, tp.prune_conv_out_channels, list(range(CHANNELS)))
    before = make_importance("folded", model)(group)
    with torch.no_grad():
        scale = torch.linspace(0.1, 100.0, CHANNELS)  # var x s^2 stays far above eps
        conv.weight.mul_(scale[:, None, None, None])  # the same network: conv x s, BN statistics x s
        bn.running_var.mul_(scale ** 2)
        bn.running_mean.mul_(scale)
    after = make_importance("folded", model)(group)
    assert torch.allclose(before, after, rtol=1e-3), (before, after)
    assert following_norms(model) == {conv: bn}


def test_activation_criteria_refuse_missing_or_stale_statistics():
    model = tiny()
    importance = make_importance("contribution", model)
    pruner = tp.pruner.MetaPruner(model, torch.zeros(1, 3, 8, 8), importance=importance, pruning_ratio=0.5,
                                  ignored_layers=[model[3]])
    with pytest.raises(RuntimeError, match="run measure_inputs"):
        pruner.step()
    measure_inputs(model, batches())
    clear_inputs(model)
    assert not any(hasattr(m, "_prune_input_stats") for m in model.modules())
    with pytest.raises(ValueError, match="unknown importance"):
        make_importance("random", model)


class PooledConcat(nn.Module):
    """A YOLOX SPP in small: the reader sees the channels and their max-pooled copy side by side."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, CHANNELS, 3, padding=1)
        self.pool = nn.MaxPool2d(3, stride=1, padding=1)
        self.reader = nn.Conv2d(2 * CHANNELS, 4, 1)

    def forward(self, x):
        x = self.conv(x)
        return self.reader(torch.cat([x, self.pool(x)], 1))


@pytest.mark.parametrize("name", ["activation", "contribution"])
def test_activation_criteria_prune_a_channel_read_through_a_concatenation(name):
    """The only scored layer reads twice the group's channels; the scores still rank the group."""
    torch.manual_seed(0)
    model = PooledConcat().eval()
    importance = make_importance(name, model)
    measure_inputs(model, batches())
    tp.pruner.MetaPruner(model, torch.zeros(1, 3, 8, 8), importance=importance, pruning_ratio=0.5,
                         ignored_layers=[model.reader]).step()
    assert model.conv.out_channels == CHANNELS // 2 and model.reader.in_channels == CHANNELS
    assert model(torch.zeros(1, 3, 8, 8)).shape == (1, 4, 8, 8)
