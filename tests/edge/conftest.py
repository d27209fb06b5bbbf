"""Fixtures of the edge suite (the edge servers themselves come from tests/conftest.py)."""

from __future__ import annotations

import pytest

from tests.conftest import EDGE_MODEL

EDGE_NAME = EDGE_MODEL.name


@pytest.fixture(scope="session")
def edge_manifest():
    from robot_compress.runtime.model_contract import ModelDir

    return ModelDir.load(EDGE_MODEL).manifest
