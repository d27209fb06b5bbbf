"""Tiny synthetic CIFAR-like data and recipes, so every stage runs for real in seconds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from robot_compress.cli import main

SIZE = 16  # image side: small enough for seconds per epoch, large enough for two stride-2 stages
# One intra-op thread: on a shared machine torch's OpenMP threads spin-wait for a busy sibling core
# and multiply the CPU time; these tiny models gain nothing from a second thread.
torch.set_num_threads(1)


def synthetic_images(count: int, seed: int, size: int = SIZE) -> tuple[np.ndarray, np.ndarray]:
    """Learnable 10-class images: each class has its own colour and bright quadrant, plus noise."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, count).astype(np.uint8)
    colours = np.random.default_rng(123).integers(40, 215, (10, 3))
    images = rng.normal(0, 25, (count, size, size, 3)) + colours[labels][:, None, None, :]
    half = size // 2
    for i, label in enumerate(labels):
        row, col = divmod(int(label) % 4, 2)
        images[i, row * half:(row + 1) * half, col * half:(col + 1) * half] += 60 if label < 4 else -60
    return np.clip(images, 0, 255).astype(np.uint8), labels


@pytest.fixture(scope="session")
def synthetic_npz(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("synthetic")
    paths = []
    for name, count, seed in (("train", 480, 1), ("eval", 160, 2)):
        x, y = synthetic_images(count, seed)
        path = root / f"{name}.npz"
        np.savez_compressed(path, x=x, y=y, approx=np.zeros(count, dtype=bool))
        paths.append(path)
    return paths[0], paths[1]


def recipe_dict(train: Path, evaluation: Path, stages: list[dict] | None = None, **teacher) -> dict:
    return {
        "name": "tiny",
        "seed": 0,
        "teacher": {"kind": "cifar_resnet", "arch": "resnet20", **teacher},
        "data": {"train": str(train), "eval": str(evaluation), "val_size": 80, "batch_size": 64,
                 "input_size": [SIZE, SIZE]},
        "metrics": {"latency_runs": 5, "latency_warmup": 1},
        "stages": stages if stages is not None else [{"stage": "export_onnx"}],
    }


def write_recipe(directory: Path, data: dict) -> Path:
    path = directory / "recipe.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture
def tiny_recipe(synthetic_npz, tmp_path):
    """Writes a recipe for the synthetic data; returns (path, dict) given the stages."""
    def make(stages: list[dict] | None = None, **teacher) -> tuple[Path, dict]:
        data = recipe_dict(*synthetic_npz, stages, **teacher)
        return write_recipe(tmp_path, data), data
    return make


@pytest.fixture
def context(synthetic_npz, tmp_path):
    """A stage Context over the synthetic data with a random-init ResNet-20 teacher."""
    from robot_compress.compress.data import load_splits
    from robot_compress.compress.models import build_model
    from robot_compress.compress.recipe import parse_recipe
    from robot_compress.compress.stages import Context

    torch.manual_seed(0)
    recipe = parse_recipe(recipe_dict(*synthetic_npz))
    return Context(recipe, build_model(recipe.teacher), load_splits(recipe.data, 0), tmp_path, 0)


@pytest.fixture(scope="session")
def trained_model(synthetic_npz):
    """A ResNet-20 trained on the synthetic task (plain fine-tuning), shared by the tests."""
    from robot_compress.compress.cifar_resnet import cifar_resnet
    from robot_compress.compress.data import load_splits
    from robot_compress.compress.recipe import Distill, parse_recipe
    from robot_compress.compress.train import train

    torch.manual_seed(0)
    recipe = parse_recipe(recipe_dict(*synthetic_npz))
    model, _ = train(cifar_resnet("resnet20"), Distill(epochs=6, lr=0.05, alpha=0.0), load_splits(recipe.data, 0),
                     None, 0, batch_size=32)
    return model


DETECTOR_SIZE = 320


@pytest.fixture(scope="session")
def weights(shared_data):
    return shared_data / "weights" / "yolox_nano-e8af0749.onnx"


@pytest.fixture(scope="session")
def detector_dir(tmp_path_factory, weights, shared_data):
    out = tmp_path_factory.mktemp("detector") / "coco_yolox_nano_320"
    code = main(["convert-detector", "--size", str(DETECTOR_SIZE), "--weights", str(weights), "--out", str(out),
                 "--check-images", str(shared_data / "coco" / "train" / "images"), "--check-count", "4"])
    assert code == 0
    return out
