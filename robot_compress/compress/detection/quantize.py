"""Static INT8 (QDQ) of a detection graph, calibrated on letterboxed training images.

Quantized: the network body from the third CSP stage on (backbone, neck, head branches),
per-channel int8 weights (7-bit range, as the classifier recipes use) and uint8 activations whose
ranges are the 99.99th percentile over the calibration images. Kept in float32, and why:
  - the stem and the first two CSP stages (dark2, dark3): with batch norm folded into them,
    their output channels span very different ranges, and one uint8 scale per tensor wipes out
    the narrow ones. Quantizing the stem or dark2 alone moves the top scores on held-out coco/train
    images by ~0.2 (all the later stages together: ~0.03). Measured as mAP50-95 on the 182
    officially labelled coco/train images (calibration used 64 others): FP32 22.8; stem + dark2
    float: 21.0 (MinMax), 21.5 (99.99th percentile); stem + dark2 + dark3 float with the
    percentile: 22.4, at the same speed;
  - the three predictor convolutions per level (class, box, objectness): their outputs are the
    box offsets and log sizes, where an 8-bit step of about 1/30 of the range moves a box edge
    by several pixels and costs mAP at the strict IoU thresholds; they are 9 small 1x1 convs;
  - the head's final sigmoid / concat and everything after (decode, NMS, top-k): box arithmetic
    in pixels and score comparisons, a few cheap elementwise ops on [N, cells] tensors.
Other calibration methods, percentiles, more images and a float dark4 were no better on those
held-out images (`benchmarks/detector_int8_choices.py`); what helped was changing the float
network before quantizing it (`qat.correct_biases`, `convert-detector --bias-correction`) and,
most, keeping the head's stems and class/box branches float too (`FLOAT_HEAD`,
`convert-detector --float-head`, the robot model's choice); 8-bit weights and learnt rounding
(`adaround.py`) did not.
"""

from __future__ import annotations

import contextlib
import io
import tempfile
from pathlib import Path

import numpy as np

BODY_PREFIX = "/model/"
FLOAT_PREFIXES = ("/model/head/cls_preds", "/model/head/reg_preds", "/model/head/obj_preds",
                  "/model/backbone/backbone/stem/", "/model/backbone/backbone/dark2/",
                  "/model/backbone/backbone/dark3/")
CALIBRATION_PERCENTILE = 99.99
# `convert-detector --float-head`: the head's stems and class/box branches float too (the neck's
# outputs are the last quantized tensors); on held-out coco/train images the INT8 network's boxes
# agree with the FP32 network's far more closely (`benchmarks/detector_int8_choices.py`, bc_head_float)
FLOAT_HEAD = "/model/head/"


def float_nodes(model, prefixes: tuple[str, ...] = FLOAT_PREFIXES) -> list[str]:
    """Names of the nodes that stay float32 (see the module docstring)."""
    keep = []
    for node in model.graph.node:
        name = node.name
        head_tail = name.startswith("/model/head/") and name.count("/") == 3  # e.g. /model/head/Concat
        if not name.startswith(BODY_PREFIX) or head_tail or name.startswith(prefixes):
            keep.append(name)
    return keep


class _Calibration:
    """Letterboxed uint8 batches for ONNX Runtime's calibrator."""

    def __init__(self, tensors: np.ndarray, input_name: str, batch: int = 8):
        self.batches = iter([tensors[i:i + batch] for i in range(0, len(tensors), batch)])
        self.input_name = input_name

    def get_next(self) -> dict | None:
        batch = next(self.batches, None)
        return None if batch is None else {self.input_name: batch}


def quantize_detector(source: str | Path, output: str | Path, calibration: np.ndarray,
                      input_name: str = "images", reduce_range: bool = True, method: str = "Percentile",
                      percentile: float = CALIBRATION_PERCENTILE, symmetric_ranges: bool | None = None,
                      float_prefixes: tuple[str, ...] = FLOAT_PREFIXES, weight_type: str = "QInt8") -> Path:
    """Write the INT8 QDQ version of a detection graph. `calibration`: [N, S, S, 3] uint8, training images.

    The defaults are the shipped choice; `method` (ONNX Runtime's MinMax, Percentile, Entropy),
    `percentile`, `symmetric_ranges` (None: the calibrator's default; the percentile calibrator's
    is a range from |x|, clipped to the observed min/max) and `float_prefixes` exist to compare alternatives on held-out images
    (`benchmarks/detector_int8_choices.py`). `weight_type` "QInt8" or "QUInt8" (symmetric: zero
    point 127, the same steps as int8 [-127, 127], but run by ONNX Runtime's u8u8 kernels)."""
    import onnx
    from onnxruntime import quantization as q

    from robot_compress.compress.onnx_names import unshare_biases

    class Reader(_Calibration, q.CalibrationDataReader):
        pass

    if calibration.dtype != np.uint8 or calibration.ndim != 4 or not len(calibration):
        raise ValueError(f"calibration images must be a non-empty [N, S, S, 3] uint8 array, got "
                         f"{calibration.dtype} {calibration.shape}")
    output = Path(output)
    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        q.quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
        unshare_biases(prepared)
        excluded = float_nodes(onnx.load(str(prepared)), float_prefixes)
        if weight_type not in ("QInt8", "QUInt8"):
            raise ValueError(f"weight_type must be QInt8 or QUInt8, got {weight_type!r}")
        options = {} if symmetric_ranges is None else {"CalibTensorRangeSymmetric": symmetric_ranges}
        options["WeightSymmetric"] = True
        if method == "Percentile":
            options["CalibPercentile"] = percentile
        with contextlib.redirect_stdout(io.StringIO()):  # the percentile calibrator prints its progress
            q.quantize_static(str(prepared), str(output), Reader(calibration, input_name),
                              quant_format=q.QuantFormat.QDQ, per_channel=True, reduce_range=reduce_range,
                              activation_type=q.QuantType.QUInt8, weight_type=getattr(q.QuantType, weight_type),
                              calibrate_method=getattr(q.CalibrationMethod, method), nodes_to_exclude=excluded,
                              extra_options=options)
    return output
