"""Truncated-SVD factorisation: a k x k convolution becomes a k x k convolution to r channels
followed by a 1x1 convolution back to the original width; a Linear becomes two Linears. A layer
is only factorised when that saves parameters."""

from __future__ import annotations

import copy

import torch
from torch import nn

from robot_compress.compress.recipe import LowRank
from robot_compress.compress.stages import Artefact, Context


def choose_rank(singular_values: torch.Tensor, params: LowRank) -> int:
    if params.rank_ratio is not None:
        return max(1, round(params.rank_ratio * len(singular_values)))
    energy = torch.cumsum(singular_values ** 2, 0) / (singular_values ** 2).sum()
    return int(torch.searchsorted(energy, torch.tensor(params.energy)).item()) + 1


def factorise(layer: nn.Module, params: LowRank) -> nn.Module | None:
    """The two-layer replacement of `layer`, or None when it would not be smaller."""
    weight = layer.weight.detach()
    matrix = weight.flatten(1)  # (out, in * k * k)
    if isinstance(layer, nn.Conv2d) and layer.groups != 1 or matrix.numel() < params.min_params:
        return None
    u, s, vh = torch.linalg.svd(matrix, full_matrices=False)
    rank = choose_rank(s, params)
    if rank * (matrix.shape[0] + matrix.shape[1]) >= matrix.numel():
        return None
    root = s[:rank].sqrt()
    first_weight, second_weight = root[:, None] * vh[:rank], u[:, :rank] * root[None]
    bias = layer.bias is not None
    if isinstance(layer, nn.Linear):
        first, second = nn.Linear(layer.in_features, rank, bias=False), nn.Linear(rank, layer.out_features, bias=bias)
        first.weight.data.copy_(first_weight)
        second.weight.data.copy_(second_weight)
    else:
        first = nn.Conv2d(layer.in_channels, rank, layer.kernel_size, layer.stride, layer.padding,
                          layer.dilation, bias=False)
        second = nn.Conv2d(rank, layer.out_channels, 1, bias=bias)
        first.weight.data.copy_(first_weight.view(rank, *weight.shape[1:]))
        second.weight.data.copy_(second_weight[:, :, None, None])
    if bias:
        second.bias.data.copy_(layer.bias.detach())
    return nn.Sequential(first, second)


def run(params: LowRank, artefact: Artefact, ctx: Context) -> Artefact:
    model = copy.deepcopy(artefact.model).cpu().eval()
    replaced = 0
    for module in list(model.modules()):
        for name, child in module.named_children():
            if isinstance(child, (nn.Conv2d, nn.Linear)) and child.weight.requires_grad:
                replacement = factorise(child, params)
                if replacement is not None:
                    setattr(module, name, replacement)
                    replaced += 1
    return Artefact(model, info={"factorised_layers": replaced})
