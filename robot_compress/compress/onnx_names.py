"""Short tensor and node names in an ONNX file: the same graph in fewer bytes."""

from __future__ import annotations

from pathlib import Path


def compact_names(path: str | Path) -> bool:
    """Rename internal tensors and nodes to short ids (graph inputs/outputs keep their names).

    The exporter's and the quantizer's names ("/layer1/layer1.0/conv1/Conv_output_0_QuantizeLinear")
    cost ~100 kB per ResNet-56, which is most of a small INT8 model's file. The optional shapes of
    intermediate tensors (value_info, ~2 kB) are dropped. Graphs with subgraphs are left alone.
    Returns whether the file was rewritten."""
    import onnx

    path = Path(path)
    model = onnx.load(str(path))
    graph = model.graph
    if any(attr.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
           for node in graph.node for attr in node.attribute):
        return False
    keep = {v.name for v in graph.input} | {v.name for v in graph.output}
    mapping: dict[str, str] = {}

    def short(name: str) -> str:
        if not name or name in keep:
            return name
        return mapping.setdefault(name, f"t{len(mapping)}")

    for tensor in graph.initializer:
        tensor.name = short(tensor.name)
    for index, node in enumerate(graph.node):
        node.name = f"n{index}"
        node.doc_string = ""
        node.input[:] = [short(name) for name in node.input]
        node.output[:] = [short(name) for name in node.output]
    del graph.value_info[:]  # intermediate shapes: optional, and ONNX Runtime infers them anyway
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return True


def unshare_biases(path) -> int:
    """Give every Conv/Gemm its own bias initializer; returns how many copies were made.

    The exporter stores equal constants once, so convolutions whose folded biases are equal share
    one initializer. ONNX Runtime's QDQ quantizer copies a shared bias as name + number ("t5" ->
    "t50"), which after compact_names can be an existing tensor, e.g. that convolution's input; the
    file then fails to load ("Input tensor must have at least 2 dimensions"). Our copies get names
    of their own first."""
    import onnx

    model = onnx.load(str(path))
    initializers = {tensor.name: tensor for tensor in model.graph.initializer}
    seen: set[str] = set()
    copies = 0
    for node in model.graph.node:
        if node.op_type not in ("Conv", "Gemm") or len(node.input) < 3 or node.input[2] not in initializers:
            continue
        if node.input[2] in seen:
            copy = onnx.TensorProto()
            copy.CopyFrom(initializers[node.input[2]])
            copy.name = f"{node.input[2]}_for_{node.output[0]}"
            model.graph.initializer.append(copy)
            node.input[2] = copy.name
            copies += 1
        seen.add(node.input[2])
    if copies:
        onnx.save(model, str(path))
    return copies
