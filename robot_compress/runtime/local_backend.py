"""On-robot inference with ONNX Runtime on a verified model directory."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from robot_compress.runtime.classification import Prediction, predictions
from robot_compress.runtime.errors import ModelError
from robot_compress.runtime.model_contract import ModelDir, check_session
from robot_compress.runtime.preprocess import preprocess_batch

# Accelerated providers tried in this order with providers="auto" (Jetson: TensorRT/CUDA).
PREFERRED_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")


def make_session(onnx_path: str | Path, threads: int = 1, providers: str | list[str] = "cpu",
                 fused: bool = True):
    """An ONNX Runtime session with a fixed thread count (latency numbers depend on it).

    `fused=False` keeps ONNX Runtime from fusing QuantizeLinear/DequantizeLinear pairs into its
    integer kernels (QLinearConv, QGemm, ...): the INT8 graph is then computed as its ONNX
    definition says (dequantize, float operator, quantize), the same on every CPU up to float
    rounding. The fused kernels are what a robot runs; they differ by CPU (AVX2, VNNI, AMX)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if fused
                                        else ort.GraphOptimizationLevel.ORT_ENABLE_BASIC)
    options.log_severity_level = 3
    if providers == "cpu":
        chosen = ["CPUExecutionProvider"]
    elif providers == "auto":
        available = set(ort.get_available_providers())
        chosen = [p for p in PREFERRED_PROVIDERS if p in available]
    else:
        chosen = list(providers)
    try:
        return ort.InferenceSession(str(onnx_path), sess_options=options, providers=chosen)
    except Exception as exc:  # onnxruntime raises several private exception types
        raise ModelError(f"{onnx_path} could not be loaded by ONNX Runtime (corrupt or not an ONNX "
                         f"model?): {str(exc).splitlines()[0]}") from exc


class LocalBackend:
    """Runs a model directory's ONNX file in-process. Checks the sha256 before loading it."""

    name = "local"

    def __init__(self, model: ModelDir | str | Path, threads: int = 1, providers: str | list[str] = "cpu"):
        self.model = model if isinstance(model, ModelDir) else ModelDir.load(model)
        self.session = make_session(self.model.onnx_path, threads=threads, providers=providers)
        check_session(self.model, self.session)

    @property
    def manifest(self):
        return self.model.manifest

    def infer(self, batch: np.ndarray, timeout_s: float | None = None) -> np.ndarray:
        """Logits for a preprocessed batch. `timeout_s` is accepted for the Backend protocol and
        ignored: local inference cannot be abandoned half-way."""
        spec = self.model.manifest
        spec.input.check_batch(batch)
        (logits,) = self.session.run([spec.output.name], {spec.input.name: batch})
        return logits

    def warm_up(self, runs: int = 3) -> None:
        """Run a few zero batches so the first real frame does not pay ONNX Runtime's first-run
        cost (allocation, kernel selection), which is long enough to miss an edge deadline."""
        spec = self.model.manifest.input
        for _ in range(runs):
            self.infer(np.zeros((1, *spec.shape), dtype=spec.dtype))

    def classify(self, images: np.ndarray, encoding: str = "rgb8", k: int = 5) -> list[Prediction]:
        """Raw uint8 images (NxHxWxC) -> predictions, using the manifest's preprocessing."""
        batch = preprocess_batch(images, encoding, self.model.manifest.preprocessing)
        return predictions(self.infer(batch), self.model.manifest.labels, k=k)

    def detect(self, images: list[np.ndarray], encoding: str = "bgr8", score_threshold: float | None = None):
        """Camera images of any size -> detections in each image's own pixels (detection models)."""
        from robot_compress.runtime.detection import detect

        return detect(self, images, encoding, score_threshold)

    def close(self) -> None:
        self.session = None
