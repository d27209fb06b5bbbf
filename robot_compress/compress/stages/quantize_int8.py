"""INT8 with ONNX Runtime's quantization tool. Static: QDQ format, per-channel int8 weights
(7-bit by default, see QuantizeInt8.reduce_range), uint8 activations calibrated on training
images (never on evaluation images). Dynamic: only MatMul/Gemm, because dynamic quantization of
convolutions makes them slower on CPU."""

from __future__ import annotations

import numpy as np
from onnxruntime import quantization as q

from robot_compress.compress.data import calibration_sample
from robot_compress.compress.onnx_names import compact_names, unshare_biases
from robot_compress.compress.recipe import QuantizeInt8
from robot_compress.compress.stages import Artefact, Context
from robot_compress.runtime.preprocess import preprocess_batch

METHODS = {"minmax": q.CalibrationMethod.MinMax, "entropy": q.CalibrationMethod.Entropy,
           "percentile": q.CalibrationMethod.Percentile}


class CalibrationImages(q.CalibrationDataReader):
    """Preprocessed training images, fed in batches of 32 through the runtime's preprocessing."""

    def __init__(self, images: np.ndarray, spec, input_name: str = "input", batch: int = 32):
        self.batches = iter([preprocess_batch(images[i:i + batch], "rgb8", spec)
                             for i in range(0, len(images), batch)])
        self.input_name = input_name

    def get_next(self) -> dict | None:
        batch = next(self.batches, None)
        return None if batch is None else {self.input_name: batch}


def largest_int8_weight(path) -> int:
    """The largest |value| among a quantized model's int8 initializers: at most 64 when the
    weights are 7-bit, so no uint8 x int8 pair sum can saturate int16 on an AVX2 CPU."""
    import onnx
    from onnx import numpy_helper

    weights = [numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer
               if t.data_type == onnx.TensorProto.INT8]
    return max((int(np.abs(w.astype(np.int16)).max()) for w in weights if w.size), default=0)


def drop_zero_bias_points(path) -> int:
    """Remove the all-zero zero-point input of each int32 bias DequantizeLinear; returns how many.

    ONNX Runtime's quantizer stores one int32 zero per output channel (2% of a 70 K-parameter
    model's INT8 file), although a missing zero point means zero. The fused kernels and the answers
    stay the same. Weight zero points stay: QGemm requires them."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    initializers = {tensor.name: tensor for tensor in model.graph.initializer}
    dropped = 0
    for node in model.graph.node:
        if node.op_type != "DequantizeLinear" or len(node.input) < 3 or node.input[0] not in initializers:
            continue
        data, zero_point = initializers[node.input[0]], initializers.get(node.input[2])
        if data.data_type == onnx.TensorProto.INT32 and zero_point is not None \
                and not numpy_helper.to_array(zero_point).any():
            del node.input[2]
            dropped += 1
    used = {name for node in model.graph.node for name in node.input}
    kept = [tensor for tensor in model.graph.initializer if tensor.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept)
    onnx.save(model, str(path))
    return dropped


def run(params: QuantizeInt8, artefact: Artefact, ctx: Context) -> Artefact:
    source = artefact.onnx
    if ctx.recipe.task == "detection":  # convert-detector's INT8 path: which parts stay float and why
        from robot_compress.compress.detection.task import quantize

        output = quantize(source, ctx.stage_dir / "model.onnx", ctx.splits, params.calibration_images, ctx.seed,
                          params.reduce_range)
        return Artefact(artefact.model, onnx=output, info={"mode": "static", "calibration_images": min(
            params.calibration_images, len(ctx.splits.train))})
    prepared = ctx.stage_dir / "preprocessed.onnx"
    q.quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
    unshare_biases(prepared)
    output = ctx.stage_dir / "model.onnx"
    if params.mode == "static":
        reader = CalibrationImages(calibration_sample(ctx.splits.train, params.calibration_images, ctx.seed),
                                   ctx.splits.spec)
        q.quantize_static(str(prepared), str(output), reader, quant_format=q.QuantFormat.QDQ,
                          per_channel=params.per_channel, reduce_range=params.reduce_range,
                          activation_type=q.QuantType.QUInt8,
                          weight_type=q.QuantType.QInt8, calibrate_method=METHODS[params.calibrate_method],
                          extra_options={"CalibPercentile": params.percentile})
    else:
        q.quantize_dynamic(str(prepared), str(output), op_types_to_quantize=["MatMul", "Gemm"],
                           per_channel=params.per_channel, weight_type=q.QuantType.QInt8)
    prepared.unlink()
    drop_zero_bias_points(output)
    compact_names(output)
    return Artefact(artefact.model, onnx=output, info={"mode": params.mode, "calibration_images":
                                                        params.calibration_images if params.mode == "static" else 0})
