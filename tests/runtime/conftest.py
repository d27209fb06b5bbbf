"""Fixtures for runtime tests: a scratch copy of the small shipped model that a test may corrupt."""

from __future__ import annotations

import shutil

import pytest

from tests.conftest import SMALL_MODEL


@pytest.fixture
def model_copy(tmp_path):
    """A copy of models/cifar10_resnet20 under tmp_path (tests break it in different ways)."""
    target = tmp_path / SMALL_MODEL.name
    shutil.copytree(SMALL_MODEL, target)
    return target
