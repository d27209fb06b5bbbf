"""Deep Compression weight sharing (Han et al. 2016): per layer, k-means (linear initialisation)
of the weights into 2**bits centroids, each weight replaced by its centroid. The ONNX file still
stores float32 weights; `coded_bytes` is the size with b-bit indices plus a float32 codebook per
layer and every other parameter as float32, which is what a coded file would need."""

from __future__ import annotations

import copy

import torch
from torch import nn

from robot_compress.compress.recipe import WeightShare
from robot_compress.compress.stages import Artefact, Context


def kmeans_1d(values: torch.Tensor, clusters: int, iterations: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Centroids and each value's centroid index; centroids start evenly spaced over [min, max]."""
    centroids = torch.linspace(float(values.min()), float(values.max()), clusters)
    for _ in range(iterations):
        index = (values[:, None] - centroids[None]).abs().argmin(1)
        sums = torch.zeros(clusters).index_add_(0, index, values)
        counts = torch.zeros(clusters).index_add_(0, index, torch.ones_like(values))
        centroids = torch.where(counts > 0, sums / counts.clamp(min=1), centroids)
    return centroids, (values[:, None] - centroids[None]).abs().argmin(1)


@torch.no_grad()
def run(params: WeightShare, artefact: Artefact, ctx: Context) -> Artefact:
    model = copy.deepcopy(artefact.model).cpu().eval()
    clusters = 2 ** params.bits
    shared = set()
    coded_bits = 0
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)) and module.weight.numel() > clusters:
            flat = module.weight.flatten()
            centroids, index = kmeans_1d(flat, clusters, params.iterations)
            module.weight.copy_(centroids[index].view_as(module.weight))
            shared.add(id(module.weight))
            coded_bits += flat.numel() * params.bits + clusters * 32
    coded_bits += sum(p.numel() * 32 for p in model.parameters() if id(p) not in shared)
    coded_bits += sum(b.numel() * 32 for name, b in model.named_buffers() if "running" in name)
    return Artefact(model, info={"bits": params.bits, "shared_layers": len(shared), "coded_bytes": coded_bits // 8})
