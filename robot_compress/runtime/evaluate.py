"""Top-1 accuracy of any backend on labelled uint8 images, through the runtime's preprocessing."""

from __future__ import annotations

import numpy as np

from robot_compress.runtime.backend import Backend
from robot_compress.runtime.datasets import LabelledImages
from robot_compress.runtime.model_contract import Preprocessing
from robot_compress.runtime.preprocess import preprocess_batch


def top1_accuracy(backend: Backend, data: LabelledImages, spec: Preprocessing, batch_size: int = 250,
                  progress: bool = False) -> float:
    """Fraction of images whose arg-max logit is the label (images are rgb8)."""
    correct = 0
    starts = range(0, len(data), batch_size)
    if progress:
        from rich.progress import track

        starts = track(starts, description=f"evaluating {getattr(backend, 'name', 'model')}")
    for start in starts:
        images = data.images[start:start + batch_size]
        logits = backend.infer(preprocess_batch(images, "rgb8", spec))
        correct += int((np.argmax(logits, axis=1) == data.labels[start:start + batch_size]).sum())
    return correct / len(data)
