"""Round an ONNX CNN's channel counts up to a multiple with zero filters: the same answers, faster.

Pruning leaves widths like 10, 20 and 41. ONNX Runtime's x86 convolution kernels work in blocks of
8 or 16 channels, and at such widths they fall back to slow paths: the 9-block ResNet-56 cut runs
17-31% faster at 16/24/41 channels than at 10/20/41 (AMD EPYC, INT8, 1 thread), although it then
does more multiply-adds. The added filters are all zero and the next layer gives their (constant)
outputs zero weight, so the graph's answers stay what they were; the price is the zeros' bytes in
the file. "The graph's answers": ONNX Runtime's fused INT8 kernels are not bit-exact across
widths on every CPU (with its AMX kernels on an Intel Xeon an odd-width convolution answered
differently at the padded right border), so the check compares the unfused graphs and reports the fused difference
of the CPU it runs on beside it.

Works on float and on QDQ (INT8) graphs. A group of tensors that must share a width (a residual
stream joined by Add) is widened only when every node touching it is one this module understands;
anything else (grouped convolutions, reshapes, graph outputs) keeps its width."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from robot_compress.compress.logit_tolerance import allowed_diff, mismatch

# Ops whose output channel c depends on input channel c alone; a zero channel stays a constant one.
CHANNELWISE = {"Relu", "Clip", "Add", "QuantizeLinear", "DequantizeLinear", "GlobalAveragePool", "MaxPool",
               "AveragePool", "Identity", "Flatten"}


@dataclass
class AlignmentResult:
    model: onnx.ModelProto
    widths: dict[int, int] = field(default_factory=dict)  # original width -> aligned width, of groups widened


class _Graph:
    """Producers, consumers and initializers of a graph, with copy-on-write initializers."""

    def __init__(self, model: onnx.ModelProto):
        self.graph = model.graph
        self.init = {t.name: t for t in self.graph.initializer}
        self.producer = {out: node for node in self.graph.node for out in node.output}
        self.consumers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
        for node in self.graph.node:
            for name in node.input:
                self.consumers[name].append(node)
        self.uses = defaultdict(int, {name: len(nodes) for name, nodes in self.consumers.items()})
        self.boundary = {v.name for v in self.graph.input} | {v.name for v in self.graph.output}
        inferred = onnx.shape_inference.infer_shapes(model)
        self.shapes = {v.name: [d.dim_value if d.HasField("dim_value") else None
                                for d in v.type.tensor_type.shape.dim]
                       for v in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output)}

    def array(self, name: str) -> np.ndarray:
        return numpy_helper.to_array(self.init[name])

    def weight(self, name: str) -> tuple[str, onnx.NodeProto | None] | None:
        """(initializer, its DequantizeLinear or None) behind a Conv/Gemm weight or bias input."""
        if name in self.init:
            return name, None
        node = self.producer.get(name)
        if node is not None and node.op_type == "DequantizeLinear" and node.input[0] in self.init \
                and len(self.consumers[name]) == 1:
            return node.input[0], node
        return None

    def pad(self, node: onnx.NodeProto, index: int, axis: int, size: int, mode: str = "constant") -> None:
        """Pad input `index` of `node` (an initializer) along `axis` to `size`; shared ones are copied."""
        name = node.input[index]
        values = self.array(name)
        if values.ndim == 0 or values.shape[axis] >= size:
            return
        widths = [(0, 0)] * values.ndim
        widths[axis] = (0, size - values.shape[axis])
        padded = numpy_helper.from_array(np.pad(values, widths, mode=mode), name)
        if self.uses[name] > 1:
            self.uses[name] -= 1
            padded.name = f"{name}_w{size}_{node.output[0]}"
            node.input[index] = padded.name
            self.graph.initializer.append(padded)
            self.init[padded.name] = self.graph.initializer[-1]
            self.uses[padded.name] = 1
        else:
            self.init[name].CopyFrom(padded)


def _conv_in_out(node: onnx.NodeProto, g: _Graph) -> tuple[int, int] | None:
    """(in, out) channels of a plain (group 1) Conv whose weight we can rewrite."""
    if node.op_type != "Conv" or any(a.name == "group" and a.i != 1 for a in node.attribute):
        return None
    weight = g.weight(node.input[1])
    if weight is None:
        return None
    out_channels, in_channels = g.init[weight[0]].dims[:2]
    return in_channels, out_channels


def _gemm_trans_b(node: onnx.NodeProto) -> int:
    return next((a.i for a in node.attribute if a.name == "transB"), 0)


def _groups(g: _Graph) -> dict[str, str]:
    """Activation tensor -> its group: tensors joined by channel-wise ops must share one width."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for node in g.graph.node:
        find(node.output[0])
        if node.op_type not in CHANNELWISE:
            continue
        data = [node.input[0]] if node.op_type in ("QuantizeLinear", "DequantizeLinear", "Clip") else list(node.input)
        for name in data:
            if name and name not in g.init:
                parent[find(name)] = find(node.output[0])
    return {name: find(name) for name in list(parent)}


def _blocks(g: _Graph, name: str) -> bool:
    """Whether tensor `name` cannot be widened because of how it is made or used."""
    if name in g.boundary:
        return True
    producer = g.producer.get(name)
    if producer is not None and producer.op_type == "Flatten":
        shape = g.shapes.get(producer.input[0])
        if not shape or len(shape) != 4 or shape[2:] != [1, 1]:
            return True  # flattening a feature map interleaves channels and pixels
    elif producer is not None and producer.op_type not in CHANNELWISE and _conv_in_out(producer, g) is None:
        return True
    for consumer in g.consumers[name]:
        if consumer.op_type in ("QuantizeLinear", "DequantizeLinear") and consumer.input[0] == name:
            if g.array(consumer.input[1]).ndim != 0:
                return True  # a per-channel activation scale would need widening too
        elif consumer.op_type not in CHANNELWISE and not _widens_inputs(consumer, name, g):
            return True
        elif consumer.op_type == "Add" and any(g.array(other).size > 1 for other in consumer.input if other in g.init):
            return True  # a per-channel constant would need widening too
    return False


def _widens_inputs(node: onnx.NodeProto, name: str, g: _Graph) -> bool:
    """Whether `node` takes `name` as the data input of a Conv or Gemm whose weight we can widen."""
    if node.input[0] != name:
        return False
    if node.op_type == "Conv":
        return _conv_in_out(node, g) is not None
    return node.op_type == "Gemm" and g.weight(node.input[1]) is not None


def _plan(g: _Graph, group: dict[str, str], multiple: int, max_width: int | None) -> dict[str, int]:
    """Group -> aligned width, for each group that can be widened, is not aligned yet and has at
    most `max_width` channels."""
    width: dict[str, int] = {}
    blocked: set[str] = set()
    for name, root in group.items():
        if _blocks(g, name):
            blocked.add(root)
        producer = g.producer.get(name)
        channels = _conv_in_out(producer, g) if producer is not None else None
        if channels is not None and width.setdefault(root, channels[1]) != channels[1]:
            blocked.add(root)
    return {root: -(-w // multiple) * multiple for root, w in width.items()
            if root not in blocked and w % multiple and (max_width is None or w <= max_width)}


def align_channels(model: onnx.ModelProto, multiple: int, max_width: int | None = None) -> AlignmentResult:
    """A copy of `model` whose widenable channel groups are rounded up to `multiple` channels;
    with `max_width`, only groups of at most that many channels (narrow layers gain the most
    speed, wide ones cost the most bytes)."""
    if multiple < 1:
        raise ValueError(f"multiple must be at least 1, got {multiple}")
    aligned = onnx.ModelProto()
    aligned.CopyFrom(model)
    g = _Graph(aligned)
    group = _groups(g)
    plan = _plan(g, group, multiple, max_width)
    result = AlignmentResult(aligned)
    for node in list(g.graph.node):
        size = plan.get(group.get(node.output[0], ""))
        if node.op_type == "Conv" and size:
            result.widths[_conv_in_out(node, g)[1]] = size
            _pad_filters(g, node, size)
        size = plan.get(group.get(node.input[0], "")) if node.input else None
        if node.op_type in ("Conv", "Gemm") and size:
            _pad_inputs(g, node, size)
    del aligned.graph.value_info[:]  # shapes changed; ONNX Runtime infers them again
    onnx.checker.check_model(aligned)
    return result


def _pad_filters(g: _Graph, conv: onnx.NodeProto, size: int) -> None:
    """Zero filters (and zero biases) up to `size` outputs; per-channel scales repeat the last one."""
    channels = _conv_in_out(conv, g)[1]
    for index in (1, 2):
        if len(conv.input) <= index or not conv.input[index]:
            continue
        _, dq = g.weight(conv.input[index])
        if dq is None:
            g.pad(conv, index, 0, size)
            continue
        g.pad(dq, 0, 0, size)
        for param, mode in ((1, "edge"), (2, "constant")):
            if len(dq.input) > param and dq.input[param] and g.array(dq.input[param]).shape == (channels,):
                g.pad(dq, param, 0, size, mode=mode)


def _pad_inputs(g: _Graph, node: onnx.NodeProto, size: int) -> None:
    """Zero weights for the added input channels of a Conv ([out, in, k, k]) or Gemm."""
    _, dq = g.weight(node.input[1])
    owner, slot = (dq, 0) if dq is not None else (node, 1)
    axis = 1 if node.op_type == "Conv" or _gemm_trans_b(node) else 0
    g.pad(owner, slot, axis, size)


@dataclass
class AlignmentReport:
    """What widening did. `max_abs_diff` compares the two files computed as their ONNX graphs define
    them (unfused, see local_backend.make_session): that is the check, the same on every CPU.
    `deployed_diff` compares them as this CPU's fused INT8 kernels run them, and `departure_*` how
    far each file's fused answers are from its own unfused ones: kernels that mishandle a width
    show up there, in the file they mishandle."""

    widths: dict[int, int]
    max_abs_diff: float
    bytes_before: int
    bytes_after: int
    deployed_diff: float = 0.0
    departure_before: float = 0.0
    departure_after: float = 0.0
    allowed: float = 0.0  # the bound, scaled to these logits (logit_tolerance.allowed_diff)

    def same_on_this_cpu(self) -> bool:
        """Whether the fused kernels of the CPU it ran on answer for both files alike, within the bound."""
        return self.deployed_diff <= self.allowed

    def summary(self) -> str:
        widened = ", ".join(f"{a}->{b}" for a, b in sorted(self.widths.items())) or "none (already aligned)"
        text = (f"channels widened: {widened}; max |after - before| {self.max_abs_diff:.2e}; "
                f"{self.bytes_before:,} -> {self.bytes_after:,} bytes")
        if not self.same_on_this_cpu():
            text += f"\n{self.kernel_note()}"
        return text

    def kernel_note(self) -> str:
        """Why the files answer differently on this CPU although the graphs agree."""
        return (f"on this CPU's fused INT8 kernels the two files differ by {self.deployed_diff:.2e}: the "
                f"original departs from its own graph's answers by {self.departure_before:.2e}, the widened "
                f"file by {self.departure_after:.2e} (ONNX Runtime's integer convolution kernels treat some "
                f"channel widths differently; see docs/DEPLOY.md, INT8 on each CPU)")

    def as_record(self) -> dict:
        return {"max_abs_diff": self.max_abs_diff, "deployed_max_abs_diff": self.deployed_diff,
                "departure_before": self.departure_before, "departure_after": self.departure_after}


class AlignmentMismatch(RuntimeError):
    """The widened file does not answer what the original answers."""


def align_file(source: Path, target: Path, multiple: int, inputs: np.ndarray, bound: float,
               max_width: int | None = None) -> AlignmentReport:
    """Write `source` widened (see align_channels) as `target`, checked on `inputs` with ONNX Runtime."""
    return save_checked(align_channels(onnx.load(str(source)), multiple, max_width), source, target, inputs, bound)


def _answers(path: Path, inputs: np.ndarray, fused: bool) -> np.ndarray:
    from robot_compress.runtime.local_backend import make_session

    session = make_session(path, fused=fused)
    return session.run(None, {session.get_inputs()[0].name: inputs})[0]


def save_checked(result: AlignmentResult, source: Path, target: Path, inputs: np.ndarray,
                 bound: float) -> AlignmentReport:
    """Save an alignment of `source` as `target`; raises AlignmentMismatch unless both graphs answer
    `inputs` alike. Zero filters add exact zeros, so the unfused graphs agree on every CPU; the fused
    kernels of this CPU are compared too and reported (AlignmentReport), not held to the bound: they
    can mishandle the original widths as well as the new ones (measured in the report)."""
    onnx.save(result.model, str(target))
    reference = [_answers(path, inputs, fused=False) for path in (source, target)]
    diff = float(np.abs(reference[0] - reference[1]).max())
    same_top1 = float((reference[0].argmax(1) == reference[1].argmax(1)).mean())
    if problem := mismatch(diff, bound, reference[0]):
        raise AlignmentMismatch(f"{target}: differs from {source} {problem} on {len(inputs)} images; "
                                f"top-1 agrees on {same_top1:.1%}")
    deployed = [_answers(path, inputs, fused=True) for path in (source, target)]
    return AlignmentReport(widths=result.widths, max_abs_diff=diff, bytes_before=source.stat().st_size,
                           bytes_after=target.stat().st_size, allowed=allowed_diff(bound, reference[0]),
                           deployed_diff=float(np.abs(deployed[0] - deployed[1]).max()),
                           departure_before=float(np.abs(deployed[0] - reference[0]).max()),
                           departure_after=float(np.abs(deployed[1] - reference[1]).max()))
