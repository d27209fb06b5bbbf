"""Logits -> labelled predictions (softmax, top-k), shared by every backend and the CLI."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Prediction:
    class_id: int
    label: str
    score: float  # softmax probability of the top class
    top_k: tuple[tuple[str, float], ...]


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


def predictions(logits: np.ndarray, labels: list[str], k: int = 5) -> list[Prediction]:
    """One Prediction per row of an (N, num_classes) logits array."""
    logits = np.asarray(logits, dtype=np.float64)
    if logits.ndim != 2 or logits.shape[1] != len(labels):
        raise ValueError(f"logits of shape {logits.shape} do not match {len(labels)} labels")
    probs = softmax(logits)
    k = min(k, len(labels))
    out = []
    for row in probs:
        order = np.argsort(-row)[:k]
        top = tuple((labels[i], float(row[i])) for i in order)
        out.append(Prediction(int(order[0]), labels[order[0]], float(row[order[0]]), top))
    return out
