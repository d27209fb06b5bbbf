"""The torch YOLOX made ready for ONNX Runtime's static INT8: bias correction and
quantization-aware fine-tuning, on a fake-quantized copy of the network.

The fake quantization sits where `quantize.py`'s QDQ graph quantizes:
  - weights of every convolution in the quantized body: int8 per output channel, symmetric, in
    the 7-bit range [-64, 64] (`reduce_range`, scale max|w| / 64), with batch norm folded in
    first, as the exported graph has it;
  - activations, uint8 per tensor (scale and zero point from a range that includes 0): each
    quantized convolution's output, its SiLU's sigmoid and product, each residual sum and
    concatenation inside the quantized body, and the dark3 output where the body starts.
The stem, dark2 and dark3 and the class/box/objectness predictors stay float, as in the QDQ
graph (the predictors still train, the first stages do not). Activation ranges are the 99.99th
percentile over the calibration images, set once before training; ONNX Runtime calibrates its
own ranges on the result. Weights' scales follow the weights.

Bias correction (`correct_biases`) takes back the mean output shift that weight rounding causes.
Fine-tuning: the network learns the FP32 teacher's raw head (`distill.distill_loss`) on augmented
training images, eval-mode (the batch norms are folded, so no statistics move), SGD at a small
learning rate. The result is an ordinary float YOLOX (folded convs with biases) that
`convert-detector` exports and quantizes as usual.
"""

from __future__ import annotations

import copy
import sys
import time

import numpy as np
import torch
from torch import nn

from robot_compress.compress.detection.distill import distill_loss, head_outputs, to_input
from robot_compress.compress.detection.weight_grid import WEIGHT_QMAX, weight_scale
from robot_compress.compress.detection.yolox import YOLOX, BaseConv, Bottleneck, CSPLayer, SPPBottleneck

PERCENTILE = 99.99
FLOAT_BACKBONE = ("stem", "dark2", "dark3")


class ActQuant(nn.Module):
    """uint8 per-tensor fake quantization with a fixed range (set by `observe`)."""

    def __init__(self):
        super().__init__()
        self.register_buffer("lo", torch.zeros(()))
        self.register_buffer("hi", torch.zeros(()))
        self.observing = False
        self.enabled = False
        self._samples: list[tuple[float, float]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.observing:
            flat = x.detach().flatten().float()
            k = max(1, int(round(flat.numel() * (1 - PERCENTILE / 100))))
            lo = -torch.topk(-flat, k, sorted=True).values[-1] if k < flat.numel() else flat.min()
            hi = torch.topk(flat, k, sorted=True).values[-1] if k < flat.numel() else flat.max()
            self._samples.append((float(lo), float(hi)))
            return x
        if not self.enabled:
            return x
        lo, hi = min(float(self.lo), 0.0), max(float(self.hi), 0.0)
        scale = max((hi - lo) / 255.0, 1e-8)
        zero_point = int(min(255, max(0, round(-lo / scale))))
        return torch.fake_quantize_per_tensor_affine(x, scale, zero_point, 0, 255)

    def finish_observing(self) -> None:
        if self._samples:
            self.lo.fill_(float(np.mean([s[0] for s in self._samples])))
            self.hi.fill_(float(np.mean([s[1] for s in self._samples])))
        self._samples = []
        self.observing = False


class WeightQuant(nn.Module):
    """Per-output-channel symmetric fake quantization to [-qmax, qmax] (a parametrization); qmax 64 is
    the 7-bit range, 127 the full 8-bit one."""

    def __init__(self, qmax: int = WEIGHT_QMAX):
        super().__init__()
        self.qmax = qmax

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        scale = weight_scale(w, self.qmax)
        zero = torch.zeros_like(scale, dtype=torch.int32)
        return torch.fake_quantize_per_channel_affine(w, scale, zero, 0, -self.qmax, self.qmax)


class QuantSiLU(nn.Module):
    """conv output -> q; sigmoid -> q; product -> q: the Conv, Sigmoid and Mul of the QDQ graph."""

    def __init__(self):
        super().__init__()
        self.q_in, self.q_sig, self.q_out = ActQuant(), ActQuant(), ActQuant()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.q_in(x)
        return self.q_out(x * self.q_sig(torch.sigmoid(x)))


def fold_batchnorms(model: YOLOX) -> YOLOX:
    """Each BaseConv's batch norm folded into its convolution (which gets a bias); BN -> Identity.
    Eval outputs are unchanged; the result trains without batch statistics."""
    with torch.no_grad():
        for layer in model.modules():
            if isinstance(layer, BaseConv) and isinstance(layer.bn, nn.BatchNorm2d):
                bn, conv = layer.bn, layer.conv
                factor = bn.weight / torch.sqrt(bn.running_var + bn.eps)
                folded = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                                   groups=conv.groups, bias=True)
                folded.weight.copy_(conv.weight * factor.reshape(-1, 1, 1, 1))
                folded.bias.copy_(bn.bias - bn.running_mean * factor)
                layer.conv, layer.bn = folded, nn.Identity()
    return model.eval()


def _quantized_modules(model: YOLOX, float_head: bool = False):
    """The BaseConvs, bottlenecks, CSP layers and SPP blocks of the quantized body (without the
    head's convolutions when `float_head`)."""
    backbone = model.backbone.backbone
    floating = {id(m) for name in FLOAT_BACKBONE for m in getattr(backbone, name).modules()}
    if float_head:
        floating |= {id(m) for m in model.head.modules()}
    return [m for m in model.modules() if id(m) not in floating]


def _pre_quant(quant: ActQuant):
    return lambda _module, inputs: (quant(inputs[0]),) + tuple(inputs[1:])


def _post_quant(quant: ActQuant):
    return lambda _module, _inputs, output: quant(output)


def prepare_qat(model: YOLOX, weight_qmax: int = WEIGHT_QMAX, float_head: bool = False) -> YOLOX:
    """A copy of `model` (batch norms folded) with fake quantization where the QDQ graph quantizes,
    weights to [-weight_qmax, weight_qmax]; with `float_head` the head's convolutions stay float
    (`quantize.FLOAT_HEAD`). Fake quantization starts disabled; `observe_ranges`
    sets the activation ranges and enables it."""
    from torch.nn.utils import parametrize

    model = fold_batchnorms(copy.deepcopy(model))
    quants = nn.ModuleList()
    model._qat_handles = []

    def quant() -> ActQuant:
        q = ActQuant()
        quants.append(q)
        return q

    for module in _quantized_modules(model, float_head):
        if isinstance(module, BaseConv):
            parametrize.register_parametrization(module.conv, "weight", WeightQuant(weight_qmax))
            module.act = QuantSiLU()
            quants.extend([module.act.q_in, module.act.q_sig, module.act.q_out])
        elif isinstance(module, Bottleneck) and module.use_add:
            model._qat_handles.append(module.register_forward_hook(_post_quant(quant())))
        elif isinstance(module, CSPLayer):  # the concatenation conv3 reads
            model._qat_handles.append(module.conv3.register_forward_pre_hook(_pre_quant(quant())))
        elif isinstance(module, SPPBottleneck):
            model._qat_handles.append(module.conv2.register_forward_pre_hook(_pre_quant(quant())))
    neck = model.backbone
    for csp in (neck.C3_p4, neck.C3_p3, neck.C3_n3, neck.C3_n4):  # the neck's concatenations
        model._qat_handles.append(csp.register_forward_pre_hook(_pre_quant(quant())))
    model._qat_handles.append(neck.backbone.dark3.register_forward_hook(_post_quant(quant())))
    model.qat_quants = quants
    return model.eval()


@torch.no_grad()
def observe_ranges(model: YOLOX, images: np.ndarray, batch: int = 8) -> None:
    """Activation ranges (99.99th percentile, averaged over batches, as the QDQ calibrator) from
    letterboxed training images [N, S, S, 3] uint8; enables the fake quantization."""
    for q in model.qat_quants:
        q.observing, q.enabled = True, False
    model.eval()
    for start in range(0, len(images), batch):
        model(to_input(images[start:start + batch], torch.device("cpu")))
    for q in model.qat_quants:
        q.finish_observing()
        q.enabled = True


def strip_qat(model: YOLOX) -> YOLOX:
    """The float network the fake quantization trained (in place): parametrizations and hooks
    removed, plain SiLU."""
    from torch.nn.utils import parametrize

    for handle in model._qat_handles:
        handle.remove()
    for module in model.modules():
        if isinstance(module, BaseConv):
            if parametrize.is_parametrized(module.conv, "weight"):
                parametrize.remove_parametrizations(module.conv, "weight", leave_parametrized=False)
            if isinstance(module.act, QuantSiLU):
                module.act = nn.SiLU(inplace=True)
    del model.qat_quants, model._qat_handles
    return model.eval()


def trainable_parameters(model: YOLOX) -> list[nn.Parameter]:
    """The quantized body's and the predictors' parameters. The float stem and first stages stay
    as they are: they are not quantized, and the stem sees 0-255 pixels, so its weight gradient is
    ~50x any other layer's and one SGD step at 1e-5 wrecks the network."""
    backbone = model.backbone.backbone
    frozen = {id(p) for name in FLOAT_BACKBONE for p in getattr(backbone, name).parameters()}
    params = []
    for p in model.parameters():
        p.requires_grad_(id(p) not in frozen)
        if id(p) not in frozen:
            params.append(p)
    return params


@torch.no_grad()
def correct_biases(model: YOLOX, images: np.ndarray, batch: int = 8) -> None:
    """Bias correction of the weight rounding: rounding a convolution's weights to int8 moves its
    mean output per channel by (W_q - W) applied to its mean input; each quantized convolution's
    bias takes that shift back, with the mean input measured in the fake-quantized network on
    training images (spatially uniform, border padding ignored)."""
    from torch.nn.utils import parametrize

    convs = {name: m.conv for name, m in model.named_modules()
             if isinstance(m, BaseConv) and parametrize.is_parametrized(m.conv, "weight")}
    sums = {name: [0.0, 0] for name in convs}

    def record(name):
        def hook(_module, inputs):
            x = inputs[0]
            sums[name][0] = sums[name][0] + x.double().sum(dim=(0, 2, 3))
            sums[name][1] += x.shape[0] * x.shape[2] * x.shape[3]
        return hook

    handles = [conv.register_forward_pre_hook(record(name)) for name, conv in convs.items()]
    try:
        model.eval()
        for start in range(0, len(images), batch):
            model(to_input(images[start:start + batch], torch.device("cpu")))
    finally:
        for h in handles:
            h.remove()
    for name, conv in convs.items():
        mean = (sums[name][0] / sums[name][1]).float()
        error = (conv.weight - conv.parametrizations.weight.original).sum(dim=(2, 3))  # [out, in / groups]
        # depthwise (groups > 1 here): one input channel per output channel
        conv.bias -= error @ mean if conv.groups == 1 else error[:, 0] * mean


@torch.no_grad()
def held_out_loss(model: YOLOX, teacher: YOLOX, images: np.ndarray, batch: int = 16) -> float:
    """Mean distillation loss against the teacher on letterboxed held-out images (eval mode)."""
    total = 0.0
    for start in range(0, len(images), batch):
        x = to_input(images[start:start + batch], torch.device("cpu"))
        loss, _ = distill_loss(head_outputs(model, x)[1], head_outputs(teacher, x)[1])
        total += float(loss) * len(x)
    return total / len(images)


def qat_finetune(teacher: YOLOX, train, size: int, epochs: int, lr: float = 1e-4, batch_size: int = 8,
                 calibration: int = 64, held_out: np.ndarray | None = None, seed: int = 0,
                 bias_correction: bool = True, weight_qmax: int = WEIGHT_QMAX, rounding_iterations: int = 0,
                 float_head: bool = False,
                 log=lambda line: print(line, file=sys.stderr, flush=True)) -> tuple[YOLOX, list[dict]]:
    """Fine-tune a fake-quantized copy of `teacher` to reproduce it; returns the float network and
    the per-epoch history. `train`: `data.DetectionImages` (training images); `held_out`: optional
    letterboxed images, only reported (never used to choose here). With `bias_correction`, the
    biases are corrected (`correct_biases`, on all of `train`) before the first epoch; 0 epochs
    is bias correction alone. With `rounding_iterations` > 0, the weights' int8 rounding is learnt
    first (`adaround.adaround`, on the calibration images, that many steps per layer; it ends with
    its own per-channel bias correction, which replaces `correct_biases`)."""
    from robot_compress.compress.detection.data import augmented_batch

    teacher = teacher.eval()
    model = prepare_qat(teacher, weight_qmax, float_head)
    calibration_images = train.letterboxed(size, calibration)
    observe_ranges(model, calibration_images)
    if held_out is not None and bias_correction:
        log(f"qat: held-out distillation loss before bias correction {held_out_loss(model, teacher, held_out):.4f}")
    if rounding_iterations > 0:
        from robot_compress.compress.detection.adaround import adaround

        adaround(model, calibration_images, rounding_iterations, log=log)
    elif bias_correction:
        correct_biases(model, train.letterboxed(size))
    trainable = trainable_parameters(model)
    # SGD with momentum: on a fixed batch of 8 coco/train images, lr 1e-4 lowers the loss step by
    # step (3.9 -> 3.6 in 5 steps), 1e-3 overshoots (3.9 -> 6.4 after one).
    optimizer = torch.optim.SGD(trainable, lr=lr, momentum=0.9, nesterov=True)
    steps = max(1, len(train) // batch_size)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, epochs * steps))
    history = []
    if held_out is not None:
        history.append({"epoch": 0, "held_out_loss": held_out_loss(model, teacher, held_out)})
        log(f"qat: held-out distillation loss before fine-tuning {history[-1]['held_out_loss']:.4f}")
    for epoch in range(epochs):
        rng = np.random.default_rng(seed * 1000 + epoch)
        order = rng.permutation(len(train))
        start, total = time.time(), 0.0
        for step in range(steps):
            x = to_input(augmented_batch(train, order[step * batch_size:(step + 1) * batch_size], size, rng),
                         torch.device("cpu"))
            with torch.no_grad():
                target = head_outputs(teacher, x)[1]
            loss, _ = distill_loss(head_outputs(model, x)[1], target)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            total += float(loss.detach())
        entry = {"epoch": epoch + 1, "loss": total / steps, "seconds": time.time() - start}
        if held_out is not None:
            entry["held_out_loss"] = held_out_loss(model, teacher, held_out)
        history.append(entry)
        log(f"qat epoch {epoch + 1}/{epochs}: loss {entry['loss']:.4f}"
            + (f", held-out {entry['held_out_loss']:.4f}" if "held_out_loss" in entry else "")
            + f", {entry['seconds']:.0f} s")
    return strip_qat(model), history
