"""Compression stages. Each takes the previous artefact and returns a new one; the pipeline saves
artefacts, measures them and handles resume, so a stage only does its one transformation."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from robot_compress.compress.data import Splits
from robot_compress.compress.recipe import Recipe


@dataclass
class Artefact:
    """A stage's output: a torch model (before export) or an ONNX file (after), plus the torch
    model it came from (for parameter and MAC counts) and stage-specific facts for the report."""

    model: nn.Module
    onnx: Path | None = None
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class Context:
    recipe: Recipe
    teacher: nn.Module
    splits: Splits
    stage_dir: Path
    seed: int


def runner(stage_name: str) -> Callable[[Any, Artefact, Context], Artefact]:
    """The `run(params, artefact, context)` function of a stage, imported on first use."""
    return importlib.import_module(f"robot_compress.compress.stages.{stage_name}").run
