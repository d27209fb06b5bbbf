"""YOLOX-nano in torch (CSPDarknet + PAFPN + decoupled head, depthwise convolutions).

The module layout follows Megvii's reference implementation so the shipped ONNX export's
initializers map onto it one convolution at a time. That export folded every batch norm into
its convolution; `load_onnx_weights` restores a batch norm after each convolution whose
statistics make it the identity (so eval outputs match the ONNX file exactly), which gives
fine-tuning and structured pruning a normal conv + BN + SiLU network to work on.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

BN_EPS = 1e-3  # the reference implementation's batch-norm settings
BN_MOMENTUM = 0.03
STRIDES = (8, 16, 32)
NUM_CLASSES = 80


class BaseConv(nn.Module):
    """Conv -> BatchNorm -> SiLU."""

    def __init__(self, in_ch: int, out_ch: int, ksize: int, stride: int = 1, groups: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, ksize, stride, (ksize - 1) // 2, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(out_ch, eps=BN_EPS, momentum=BN_MOMENTUM)
        self.act = nn.SiLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class DWConv(nn.Module):
    """Depthwise k x k then pointwise 1 x 1, each a BaseConv."""

    def __init__(self, in_ch: int, out_ch: int, ksize: int, stride: int = 1):
        super().__init__()
        self.dconv = BaseConv(in_ch, in_ch, ksize, stride, groups=in_ch)
        self.pconv = BaseConv(in_ch, out_ch, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pconv(self.dconv(x))


def _conv(depthwise: bool):
    return DWConv if depthwise else BaseConv


class Bottleneck(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, shortcut: bool, expansion: float, depthwise: bool):
        super().__init__()
        hidden = int(out_ch * expansion)
        self.conv1 = BaseConv(in_ch, hidden, 1, 1)
        self.conv2 = _conv(depthwise)(hidden, out_ch, 3, 1)
        self.use_add = shortcut and in_ch == out_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv2(self.conv1(x))
        return y + x if self.use_add else y


class SPPBottleneck(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, kernel_sizes: Sequence[int] = (5, 9, 13)):
        super().__init__()
        hidden = in_ch // 2
        self.conv1 = BaseConv(in_ch, hidden, 1, 1)
        self.m = nn.ModuleList(nn.MaxPool2d(k, 1, k // 2) for k in kernel_sizes)
        self.conv2 = BaseConv(hidden * (len(kernel_sizes) + 1), out_ch, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        return self.conv2(torch.cat([x] + [m(x) for m in self.m], dim=1))


class CSPLayer(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, n: int, shortcut: bool, depthwise: bool, expansion: float = 0.5):
        super().__init__()
        hidden = int(out_ch * expansion)
        self.conv1 = BaseConv(in_ch, hidden, 1, 1)
        self.conv2 = BaseConv(in_ch, hidden, 1, 1)
        self.conv3 = BaseConv(2 * hidden, out_ch, 1, 1)
        self.m = nn.Sequential(*(Bottleneck(hidden, hidden, shortcut, 1.0, depthwise) for _ in range(n)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.conv1(x)
        x2 = self.conv2(x)  # before m: the ONNX export's conv order, which the weight loader follows
        x1 = self.m(x1)
        return self.conv3(torch.cat((x1, x2), dim=1))


class Focus(nn.Module):
    """Space-to-depth (2x2 pixel blocks into channels), then a 3 x 3 conv."""

    def __init__(self, in_ch: int, out_ch: int, ksize: int = 3):
        super().__init__()
        self.conv = BaseConv(in_ch * 4, out_ch, ksize, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        top_left = x[..., ::2, ::2]
        top_right = x[..., ::2, 1::2]
        bot_left = x[..., 1::2, ::2]
        bot_right = x[..., 1::2, 1::2]
        return self.conv(torch.cat((top_left, bot_left, top_right, bot_right), dim=1))


class CSPDarknet(nn.Module):
    def __init__(self, depth: float, width: float, depthwise: bool):
        super().__init__()
        conv = _conv(depthwise)
        bc = int(width * 64)
        bd = max(round(depth * 3), 1)
        self.stem = Focus(3, bc, 3)
        self.dark2 = nn.Sequential(conv(bc, bc * 2, 3, 2), CSPLayer(bc * 2, bc * 2, bd, True, depthwise))
        self.dark3 = nn.Sequential(conv(bc * 2, bc * 4, 3, 2), CSPLayer(bc * 4, bc * 4, bd * 3, True, depthwise))
        self.dark4 = nn.Sequential(conv(bc * 4, bc * 8, 3, 2), CSPLayer(bc * 8, bc * 8, bd * 3, True, depthwise))
        self.dark5 = nn.Sequential(conv(bc * 8, bc * 16, 3, 2), SPPBottleneck(bc * 16, bc * 16),
                                   CSPLayer(bc * 16, bc * 16, bd, False, depthwise))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.dark2(self.stem(x))
        c3 = self.dark3(x)
        c4 = self.dark4(c3)
        c5 = self.dark5(c4)
        return c3, c4, c5


class PAFPN(nn.Module):
    def __init__(self, depth: float, width: float, depthwise: bool, in_channels: Sequence[int] = (256, 512, 1024)):
        super().__init__()
        conv = _conv(depthwise)
        c0, c1, c2 = (int(c * width) for c in in_channels)
        n = round(3 * depth)
        self.backbone = CSPDarknet(depth, width, depthwise)
        self.upsample = nn.Upsample(scale_factor=2, mode="nearest")
        self.lateral_conv0 = BaseConv(c2, c1, 1, 1)
        self.C3_p4 = CSPLayer(2 * c1, c1, n, False, depthwise)
        self.reduce_conv1 = BaseConv(c1, c0, 1, 1)
        self.C3_p3 = CSPLayer(2 * c0, c0, n, False, depthwise)
        self.bu_conv2 = conv(c0, c0, 3, 2)
        self.C3_n3 = CSPLayer(2 * c0, c1, n, False, depthwise)
        self.bu_conv1 = conv(c1, c1, 3, 2)
        self.C3_n4 = CSPLayer(2 * c1, c2, n, False, depthwise)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x2, x1, x0 = self.backbone(x)
        fpn_out0 = self.lateral_conv0(x0)
        f_out0 = self.C3_p4(torch.cat([self.upsample(fpn_out0), x1], 1))
        fpn_out1 = self.reduce_conv1(f_out0)
        pan_out2 = self.C3_p3(torch.cat([self.upsample(fpn_out1), x2], 1))
        pan_out1 = self.C3_n3(torch.cat([self.bu_conv2(pan_out2), fpn_out1], 1))
        pan_out0 = self.C3_n4(torch.cat([self.bu_conv1(pan_out1), fpn_out0], 1))
        return pan_out2, pan_out1, pan_out0


class YOLOXHead(nn.Module):
    """Decoupled head: per level a stem, then separate class and box/objectness branches."""

    def __init__(self, num_classes: int, width: float, depthwise: bool, in_channels: Sequence[int] = (256, 512, 1024)):
        super().__init__()
        conv = _conv(depthwise)
        hidden = int(256 * width)
        self.num_classes = num_classes
        self.stems = nn.ModuleList(BaseConv(int(c * width), hidden, 1, 1) for c in in_channels)
        self.cls_convs = nn.ModuleList(nn.Sequential(conv(hidden, hidden, 3, 1), conv(hidden, hidden, 3, 1))
                                       for _ in in_channels)
        self.reg_convs = nn.ModuleList(nn.Sequential(conv(hidden, hidden, 3, 1), conv(hidden, hidden, 3, 1))
                                       for _ in in_channels)
        self.cls_preds = nn.ModuleList(nn.Conv2d(hidden, num_classes, 1) for _ in in_channels)
        self.reg_preds = nn.ModuleList(nn.Conv2d(hidden, 4, 1) for _ in in_channels)
        self.obj_preds = nn.ModuleList(nn.Conv2d(hidden, 1, 1) for _ in in_channels)

    def forward_levels(self, feats: Sequence[torch.Tensor]) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Per level (box [N,4,H,W], objectness logit [N,1,H,W], class logits [N,C,H,W]): the losses want logits."""
        out = []
        for k, x in enumerate(feats):
            x = self.stems[k](x)
            cls_out = self.cls_preds[k](self.cls_convs[k](x))
            reg_feat = self.reg_convs[k](x)
            out.append((self.reg_preds[k](reg_feat), self.obj_preds[k](reg_feat), cls_out))
        return out

    def forward(self, feats: Sequence[torch.Tensor]) -> torch.Tensor:
        """The raw head as the ONNX export gives it: [N, cells, 4 + 1 + C], scores through a sigmoid."""
        levels = [torch.cat([reg, obj.sigmoid(), cls.sigmoid()], 1).flatten(start_dim=2)
                  for reg, obj, cls in self.forward_levels(feats)]
        return torch.cat(levels, dim=2).permute(0, 2, 1)


class YOLOX(nn.Module):
    """Input: float32 [N, 3, H, W], BGR, 0-255, H and W multiples of 32. Output: the raw head."""

    def __init__(self, depth: float = 0.33, width: float = 0.25, depthwise: bool = True,
                 num_classes: int = NUM_CLASSES):
        super().__init__()
        self.backbone = PAFPN(depth, width, depthwise)
        self.head = YOLOXHead(num_classes, width, depthwise)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


def yolox_nano(num_classes: int = NUM_CLASSES) -> YOLOX:
    return YOLOX(depth=0.33, width=0.25, depthwise=True, num_classes=num_classes)


def _onnx_convs(path: Path) -> list[tuple[str, Any, Any]]:
    """The file's convolutions in graph order: (node name, weight, bias)."""
    import onnx
    from onnx import numpy_helper

    try:
        model = onnx.load(str(path))
    except Exception as exc:  # onnx raises several types for a corrupt file
        raise ValueError(f"{path}: not a readable ONNX file ({exc})") from exc
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    convs = []
    for node in model.graph.node:
        if node.op_type != "Conv":
            continue
        if node.input[1] not in inits:
            raise ValueError(f"{path}: conv {node.name!r} has no constant weight")
        bias = inits.get(node.input[2]) if len(node.input) > 2 else None
        convs.append((node.name or node.output[0], inits[node.input[1]], bias))
    return convs


def _execution_order(model: nn.Module, size: int = 64) -> list[tuple[nn.Conv2d, nn.BatchNorm2d | None]]:
    """Each Conv2d in the order forward runs it, with the BatchNorm that follows it (None for the predictors)."""
    bn_of = {}
    for module in model.modules():
        if isinstance(module, BaseConv):
            bn_of[module.conv] = module.bn
    order: list[nn.Conv2d] = []
    hooks = [m.register_forward_hook(lambda mod, _i, _o: order.append(mod))
             for m in model.modules() if isinstance(m, nn.Conv2d)]
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, 3, size, size))
    finally:
        for h in hooks:
            h.remove()
    return [(conv, bn_of.get(conv)) for conv in order]


def load_onnx_weights(model: YOLOX, onnx_path: str | Path) -> YOLOX:
    """Copy a YOLOX ONNX export's folded conv weights into `model`, batch norms restored as identities.

    Each folded conv y = W x + b becomes conv(W) -> BN(gamma=1, beta=b, mean=0, var=1-eps), which
    computes the same y in eval mode. Raises ValueError naming the first mismatch when the file's
    convolutions do not map onto this architecture (count, order or shape).
    """
    path = Path(onnx_path)
    convs = _onnx_convs(path)
    targets = _execution_order(model)
    if len(convs) != len(targets):
        raise ValueError(f"{path}: {len(convs)} convolutions, but this YOLOX has {len(targets)}; "
                         "the file is not an export of this architecture")
    with torch.no_grad():
        for index, ((name, weight, bias), (conv, bn)) in enumerate(zip(convs, targets, strict=True)):
            if tuple(weight.shape) != tuple(conv.weight.shape):
                raise ValueError(f"{path}: convolution {index} ({name}) has weight shape {tuple(weight.shape)}, "
                                 f"this YOLOX expects {tuple(conv.weight.shape)}")
            conv.weight.copy_(torch.from_numpy(weight.copy()))
            b = torch.zeros(weight.shape[0]) if bias is None else torch.from_numpy(bias.copy())
            if bn is None:
                conv.bias.copy_(b)
            else:
                bn.weight.fill_(1.0)
                bn.bias.copy_(b)
                bn.running_mean.zero_()
                bn.running_var.fill_(1.0 - bn.eps)
                bn.num_batches_tracked.zero_()
    return model.eval()


def yolox_nano_from_onnx(onnx_path: str | Path) -> YOLOX:
    return load_onnx_weights(yolox_nano(), onnx_path)


def calibrate_batchnorm(model: YOLOX, batches) -> YOLOX:
    """Give each restored batch norm the real statistics of its convolution's output, without
    changing what the model computes in eval mode.

    With identity statistics, a training-mode forward normalises every channel by its batch
    statistics and the pretrained network's answers are lost on the first step. Here each BN's
    running mean/var become the per-channel mean/var of its conv output over `batches` (float32
    [N, 3, H, W] BGR 0-255, training images), and gamma/beta are rescaled so eval outputs stay the
    same: train mode then starts close to the pretrained model.

    Each convolution's output channels are also scaled to unit L2 norm first, the scale moving
    into gamma. The export folded every batch norm into its convolution, so the weights' norms span
    five orders of magnitude (3e-4 to 112 per channel in YOLOX-nano); under batch norm a
    channel's effective learning rate goes as 1 / norm^2, and one epoch of distillation at lr 0.001
    wrecked an unpruned copy of the teacher (held-out distillation loss 2.8 -> 13.5; with unit
    norms 2.8 -> 4.5). Magnitude importance then ranks a channel by the weights that read it and
    by its batch norm, not by how the export happened to fold it.
    """
    layers = [m for m in model.modules() if isinstance(m, BaseConv)]
    batches = list(batches)
    if not batches:
        raise ValueError("calibrate_batchnorm needs at least one batch")
    with torch.no_grad():
        scales = {}
        for layer in layers:
            norm = layer.conv.weight.double().flatten(1).norm(dim=1).clamp(min=1e-12)
            layer.conv.weight.div_(norm.float()[:, None, None, None])
            scales[layer] = norm
    # The first pass folds the scales back into gamma/beta (eval outputs exact again) but measured
    # each layer behind not-yet-refolded ones; the second measures the restored network itself.
    _refold_statistics(model, layers, batches, scales)
    return _refold_statistics(model, layers, batches, {})


def _refold_statistics(model: YOLOX, layers: list[BaseConv], batches: list[torch.Tensor],
                       scales: dict[BaseConv, torch.Tensor]) -> YOLOX:
    """Set each BN's running statistics to its conv output's over `batches` and rescale gamma/beta
    so that eval outputs equal what they were with the weights times `scales` (1 where absent)."""
    sums: dict[BaseConv, list[torch.Tensor]] = {m: [torch.zeros(m.bn.num_features, dtype=torch.float64)] * 3
                                                for m in layers}

    def hook(layer):
        def record(_module, _inputs, output):
            z = output.detach().double().transpose(0, 1).reshape(output.shape[1], -1)
            total, s, sq = sums[layer]
            sums[layer] = [total + z.shape[1], s + z.sum(1), sq + (z * z).sum(1)]
        return record

    handles = [m.conv.register_forward_hook(hook(m)) for m in layers]
    model.eval()
    try:
        with torch.no_grad():
            for batch in batches:
                model(batch)
    finally:
        for h in handles:
            h.remove()
    with torch.no_grad():
        for layer in layers:
            count, s, sq = sums[layer]
            mean = s / count
            var = (sq / count - mean * mean).clamp(min=0)
            bn = layer.bn
            old_std = (bn.running_var.double() + bn.eps).sqrt()
            new_std = (var + bn.eps).sqrt()
            gamma = bn.weight.double()
            scale = scales.get(layer, torch.ones_like(mean))
            bn.bias.copy_((bn.bias.double() + gamma * (scale * mean - bn.running_mean.double()) / old_std).float())
            bn.weight.copy_((gamma * scale * new_std / old_std).float())
            bn.running_mean.copy_(mean.float())
            bn.running_var.copy_(var.float())
    return model
