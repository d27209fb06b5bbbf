"""The export and alignment checks' bound: absolute for logits within +-1, relative above."""

from __future__ import annotations

import numpy as np

from robot_compress.compress.logit_tolerance import allowed_diff, mismatch


def test_the_bound_is_absolute_up_to_one_and_scales_above():
    assert allowed_diff(1e-3, np.array([[0.2, -0.9]])) == 1e-3
    assert allowed_diff(1e-3, np.array([[3.0, -250.0]])) == 0.25


def test_a_mismatch_says_by_how_much_and_against_what():
    logits = np.array([[1.0, -40.0]])
    assert mismatch(0.039, 1e-3, logits) is None
    problem = mismatch(0.05, 1e-3, logits)
    assert problem is not None and "5.00e-02" in problem and "4.00e-02" in problem and "40" in problem
