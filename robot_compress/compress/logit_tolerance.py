"""How closely two implementations of one model must agree on the same inputs.

float32 rounding error grows with the values computed, so an absolute bound that suits logits
near 1 fails a correct export of a model whose logits run into the hundreds (a short, unstable
training run gives such models). The bound therefore applies to logits up to 1 in magnitude and
scales with the largest |logit| above that, like the relative term of numpy.allclose.
"""

from __future__ import annotations

import numpy as np


def allowed_diff(bound: float, reference: np.ndarray) -> float:
    """The largest |difference| accepted against `reference` logits for a recipe's `max_abs_diff`."""
    return bound * max(1.0, float(np.abs(reference).max()))


def mismatch(diff: float, bound: float, reference: np.ndarray) -> str | None:
    """Why `diff` is too large, in words, or None when it is within the bound."""
    allowed = allowed_diff(bound, reference)
    if diff <= allowed:
        return None
    return (f"by {diff:.2e} (> {allowed:.2e}: max_abs_diff {bound:.0e} x the largest |logit| "
            f"{max(1.0, float(np.abs(reference).max())):.3g})")
