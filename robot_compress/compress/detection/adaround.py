"""Learned weight rounding (AdaRound, Nagel et al. 2020) for the quantized convolutions of a
fake-quantized YOLOX (`qat.prepare_qat`), layer by layer.

Rounding each weight to its nearest int8 step minimises the weight error, not the layer's output
error: the errors of a channel's weights add up over its inputs. AdaRound chooses, per weight,
floor or ceil of w / scale so that the convolution's output on calibration images stays close to
its float output: a soft rounding h(V) in [0, 1] per weight, trained by Adam on the output MSE
plus a term that pushes every h to 0 or 1, then rounded hard. The inputs come from the
fake-quantized network (activations quantized as ONNX Runtime will; the parts of the network
before the layer's own (dark4, dark5, neck, head) already rounded: a part's inputs are captured
in one pass, to keep the cost at one forward pass per part), the target is the same layer with
its float weights on those inputs. Only the layer's own rounding error is taken back: with the
inputs of a part captured together, a target from the float network would make each layer of a
chain correct again what the layers before it already corrected (tried: the network's error grew
six-fold).
Afterwards each channel's bias takes back the remaining mean output error on the same images
(bias correction), and a layer keeps nearest rounding if the learnt one does not lower
its output error. The scales stay max|w| / qmax per channel, as ONNX Runtime computes them from
the weights it is given: the result is a float network whose weights are already on the int8
grid, which the QDQ quantization then reproduces exactly.

On the detector it lowers each layer's output error 2-5x against nearest rounding, but not the
INT8 network's mAP on held-out images (docs/DETECTION.md): there the error comes mostly from the
head's activations, so it is an option (`convert-detector --adaround-steps`), not the default.
"""

from __future__ import annotations

import sys

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from robot_compress.compress.detection.distill_loss import to_input
from robot_compress.compress.detection.weight_grid import weight_scale
from robot_compress.compress.detection.yolox import YOLOX, BaseConv

ZETA, GAMMA = 1.1, -0.1  # the rectified sigmoid's stretch (AdaRound's choice)


def rectified_sigmoid(v: torch.Tensor) -> torch.Tensor:
    return (torch.sigmoid(v) * (ZETA - GAMMA) + GAMMA).clamp(0.0, 1.0)


@torch.no_grad()
def _capture(model: nn.Module, convs: list[nn.Conv2d], images: np.ndarray, output: bool,
             batch: int) -> list[torch.Tensor]:
    """Each of `convs`' inputs (or outputs) for every image, in one pass over the images."""
    found: list[list[torch.Tensor]] = [[] for _ in convs]

    def hook(store):
        def pre(_module, inputs):
            store.append(inputs[0].detach().clone())

        def post(_module, _inputs, out):
            store.append(out.detach().clone())
        return post if output else pre

    handles = [conv.register_forward_hook(hook(store)) if output else conv.register_forward_pre_hook(hook(store))
               for conv, store in zip(convs, found, strict=True)]
    try:
        for start in range(0, len(images), batch):
            model(to_input(images[start:start + batch], torch.device("cpu")))
    finally:
        for handle in handles:
            handle.remove()
    return [torch.cat(store) for store in found]


def _group(name: str) -> str:
    """The part a layer belongs to (dark4, dark5, the neck, the head): its layers are rounded on
    inputs captured together, after the parts before it were rounded."""
    parts = name.split(".")
    return ".".join(parts[:3] if name.startswith("backbone.backbone.") else parts[:1])


def output_error(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Squared error summed over channels, mean over images and positions."""
    return (out - target).pow(2).sum(dim=1).mean()


def round_layer(weight: torch.Tensor, bias: torch.Tensor | None, conv: nn.Conv2d, inputs: torch.Tensor,
                target: torch.Tensor, qmax: int, iterations: int = 500, batch: int = 8, lr: float = 1e-2,
                reg: float = 0.01, seed: int = 0) -> tuple[torch.Tensor, dict]:
    """Learnt int8 rounding of one convolution's float `weight` (returned on the grid: q * scale),
    and its output errors {nearest, learnt} on all `inputs` against `target`. `conv` gives stride,
    padding and groups."""
    def run(w, x):
        return F.conv2d(x, w, bias, conv.stride, conv.padding, conv.dilation, conv.groups)

    scale = weight_scale(weight, qmax).reshape(-1, *[1] * (weight.dim() - 1))
    ratio = weight / scale
    base = torch.floor(ratio)
    rest = (ratio - base).clamp(1e-4, 1 - 1e-4)
    # start at h(V) = the fractional part: the soft weights equal the float ones
    v = nn.Parameter(-torch.log((ZETA - GAMMA) / (rest - GAMMA) - 1))
    optimizer = torch.optim.Adam([v], lr=lr)
    generator = torch.Generator().manual_seed(seed)
    warmup = iterations // 5
    for step in range(iterations):
        pick = torch.randint(len(inputs), (min(batch, len(inputs)),), generator=generator)
        soft = scale * (base + rectified_sigmoid(v)).clamp(-qmax, qmax)
        loss = output_error(run(soft, inputs[pick]), target[pick])
        if step >= warmup:  # the rounding term, its exponent annealed from 20 to 2
            beta = 20 - 18 * (step - warmup) / max(1, iterations - warmup)
            loss = loss + reg * (1 - (2 * rectified_sigmoid(v) - 1).abs().pow(beta)).sum()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        learnt = base + (rectified_sigmoid(v) >= 0.5).float()
        # the largest weight of each channel keeps its exact +-qmax, so the scale ONNX Runtime
        # computes from the rounded weights is the same one
        learnt = torch.where(ratio.abs() >= qmax - 1e-3, torch.round(ratio), learnt).clamp(-qmax, qmax)
        nearest = torch.round(ratio).clamp(-qmax, qmax)
        errors = {"nearest": float(_chunked_error(run, scale * nearest, inputs, target)),
                  "learnt": float(_chunked_error(run, scale * learnt, inputs, target))}
    return scale * learnt, errors


def _chunked_error(run, weight: torch.Tensor, inputs: torch.Tensor, target: torch.Tensor, chunk: int = 16):
    total = 0.0
    for start in range(0, len(inputs), chunk):
        n = len(inputs[start:start + chunk])
        total += float(output_error(run(weight, inputs[start:start + chunk]), target[start:start + chunk])) * n
    return total / len(inputs)


@torch.no_grad()
def _mean_error(conv: nn.Conv2d, weight: torch.Tensor, inputs: torch.Tensor, target: torch.Tensor,
                chunk: int = 16) -> torch.Tensor:
    """Per-channel mean of (target - output) over images and positions."""
    total = 0.0
    for start in range(0, len(inputs), chunk):
        out = F.conv2d(inputs[start:start + chunk], weight, conv.bias, conv.stride, conv.padding, conv.dilation,
                       conv.groups)
        total = total + (target[start:start + chunk] - out).double().sum(dim=(0, 2, 3))
    return (total / (len(inputs) * target.shape[2] * target.shape[3])).float()


@torch.no_grad()
def _float_output(conv: nn.Conv2d, weight: torch.Tensor, inputs: torch.Tensor, chunk: int = 16) -> torch.Tensor:
    return torch.cat([F.conv2d(inputs[start:start + chunk], weight, conv.bias, conv.stride, conv.padding,
                               conv.dilation, conv.groups) for start in range(0, len(inputs), chunk)])


def adaround(model: YOLOX, images: np.ndarray, iterations: int = 500, batch: int = 8,
             capture_batch: int = 8, log=lambda line: print(line, file=sys.stderr, flush=True)) -> list[dict]:
    """Learnt rounding of every quantized convolution of `model` (a `qat.prepare_qat` network with
    its activation ranges observed), in place, then the per-channel bias correction; `images`:
    letterboxed calibration images [N, S, S, 3] uint8. Returns each layer's output errors
    (nearest rounding, learnt, kept, after the bias correction)."""
    from torch.nn.utils import parametrize

    model.eval()
    report = []
    layers = [(name, m.conv) for name, m in model.named_modules()
              if isinstance(m, BaseConv) and parametrize.is_parametrized(m.conv, "weight")]
    groups: dict[str, list[tuple[str, nn.Conv2d]]] = {}
    for name, conv in layers:
        groups.setdefault(_group(name), []).append((name, conv))
    index = 0
    for members in groups.values():
        all_inputs = _capture(model, [conv for _, conv in members], images, False, capture_batch)
        for (name, conv), inputs in zip(members, all_inputs, strict=True):
            index += 1
            original = conv.parametrizations.weight.original
            qmax = conv.parametrizations.weight[0].qmax
            target = _float_output(conv, original.detach(), inputs)
            with torch.enable_grad():
                rounded, errors = round_layer(original.detach().clone(), conv.bias.detach().clone(), conv, inputs,
                                              target, qmax, iterations, batch, seed=index)
            with torch.no_grad():
                if errors["learnt"] < errors["nearest"]:
                    original.copy_(rounded)
                # conv.weight is the fake-quantized weight: nearest rounding of `original`, or `rounded` itself
                conv.bias += _mean_error(conv, conv.weight, inputs, target)
                errors["kept"] = "learnt" if errors["learnt"] < errors["nearest"] else "nearest"
                errors["after_bias"] = float(_chunked_error(
                    lambda w, x, c=conv: F.conv2d(x, w, c.bias, c.stride, c.padding, c.dilation, c.groups),
                    conv.weight, inputs, target))
            report.append({"layer": name, **errors})
            log(f"adaround {index}/{len(layers)} {name}: output error nearest {errors['nearest']:.4g}, "
                f"learnt {errors['learnt']:.4g} (kept {errors['kept']}), after bias {errors['after_bias']:.4g}")
        del all_inputs
    return report
