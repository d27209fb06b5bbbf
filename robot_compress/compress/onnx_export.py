"""Export a torch classifier to ONNX (opset 17, dynamic batch) and check it against PyTorch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from robot_compress.runtime.local_backend import make_session

OPSET = 17


def export_onnx(model: nn.Module, path: str | Path, input_shape: tuple[int, ...],
                input_name: str = "input", output_name: str = "logits") -> Path:
    """Write `model` (eval mode) to `path` with a dynamic batch dimension."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    example = torch.zeros((1, *input_shape))
    torch.onnx.export(
        model, (example,), str(path), dynamo=False, opset_version=OPSET,
        input_names=[input_name], output_names=[output_name],
        dynamic_axes={input_name: {0: "batch"}, output_name: {0: "batch"}},
    )
    return path


def max_abs_diff(model: nn.Module, onnx_path: str | Path, inputs: np.ndarray,
                 input_name: str = "input") -> tuple[float, np.ndarray]:
    """Largest |PyTorch - ONNX Runtime| over the logits of `inputs` (real, preprocessed images),
    and PyTorch's logits (the bound scales with them: compress.logit_tolerance)."""
    with torch.no_grad():
        expected = model.eval()(torch.from_numpy(inputs)).numpy()
    session = make_session(onnx_path, threads=2)
    (actual,) = session.run(None, {input_name: inputs.astype(np.float32)})
    return float(np.abs(expected - actual).max()), expected


class ExportMismatch(RuntimeError):
    """The exported graph does not compute what the PyTorch model computes."""
