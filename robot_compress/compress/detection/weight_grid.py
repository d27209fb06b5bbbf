"""The int8 weight grid of the QDQ graphs: ONNX Runtime's symmetric per-output-channel scales.

Its own module because both quantization-aware fine-tuning (`qat`) and learnt rounding (`adaround`)
put weights on it, and `qat` can call `adaround`.
"""

from __future__ import annotations

import torch

WEIGHT_QMAX = 64  # ONNX Runtime's reduced int8 range for weights: [-64, 64]
WEIGHT_QMAX_FULL = 127  # its full symmetric range: int8 [-127, 127], or uint8 [0, 254] around 127


def weight_scale(w: torch.Tensor, qmax: int = WEIGHT_QMAX) -> torch.Tensor:
    """ONNX Runtime's symmetric per-output-channel weight scale: max|w| / qmax, one per channel."""
    return (w.detach().abs().amax(dim=tuple(range(1, w.dim()))) / qmax).clamp(min=1e-8)
