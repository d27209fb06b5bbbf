"""Data: the seeded split, augmentation, the three on-disk formats. Teachers: the three kinds."""

from __future__ import annotations

import pickle

import cv2
import numpy as np
import pytest
import torch

from robot_compress.compress.cifar_resnet import cifar_resnet
from robot_compress.compress.data import augment, load_splits, normalize
from robot_compress.compress.models import build_model
from robot_compress.compress.recipe import DataConfig, ModelSource, RecipeError
from robot_compress.runtime.preprocess import preprocess_batch
from tests.compress.conftest import SIZE, synthetic_images


def config(train, evaluation, **extra) -> DataConfig:
    return DataConfig(train=str(train), eval=str(evaluation), val_size=50, input_size=(SIZE, SIZE), **extra)


def test_validation_split_is_seeded_and_disjoint(synthetic_npz):
    a, b, c = (load_splits(config(*synthetic_npz), seed) for seed in (0, 0, 1))
    assert len(a.val) == 50 and len(a.train) == 430
    assert np.array_equal(a.val.images, b.val.images) and not np.array_equal(a.val.images, c.val.images)
    train_rows = {img.tobytes() for img in a.train.images}
    assert not any(img.tobytes() in train_rows for img in a.val.images)


def test_augment_crops_and_flips_within_the_padded_image():
    images = torch.randint(1, 255, (6, 3, 8, 8), dtype=torch.uint8)
    out = augment(images, torch.Generator().manual_seed(0))
    assert out.shape == images.shape and out.dtype == torch.uint8
    padded = torch.nn.functional.pad(images, (1, 1, 1, 1))  # pad = 8 // 8
    for original, result in zip(padded, out, strict=True):
        crops = [crop for dy in range(3) for dx in range(3) for crop in
                 (original[:, dy:dy + 8, dx:dx + 8], original[:, dy:dy + 8, dx:dx + 8].flip(2))]
        assert any(torch.equal(result, crop) for crop in crops)
    assert not torch.equal(out, images)


def test_normalize_matches_runtime_preprocessing(synthetic_npz):
    splits = load_splits(config(*synthetic_npz), 0)
    images = splits.eval.images[:4]
    expected = preprocess_batch(images, "rgb8", splits.spec)
    actual = normalize(torch.from_numpy(images.transpose(0, 3, 1, 2).copy()), splits.spec).numpy()
    assert np.allclose(actual, expected, atol=1e-6)


def test_cifar_python_batches_and_image_folder(tmp_path):
    x, y = synthetic_images(60, 3, size=32)  # the python batches are 32x32 by definition
    batches = tmp_path / "cifar-10-batches-py"
    batches.mkdir()
    for i in range(1, 6):
        part = slice((i - 1) * 10, i * 10)
        data = {b"data": x[part].transpose(0, 3, 1, 2).reshape(10, -1), b"labels": y[part].tolist()}
        (batches / f"data_batch_{i}").write_bytes(pickle.dumps(data))
    folder = tmp_path / "folder"
    for index, (image, label) in enumerate(zip(x[50:], y[50:], strict=True)):
        (folder / f"class{label}").mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(folder / f"class{label}" / f"{index}.png"), image[::2, ::2, ::-1])  # 16x16 files
    splits = load_splits(DataConfig(train=str(batches), eval=str(folder), val_size=10, input_size=(32, 32)), 0)
    assert len(splits.train) == 40 and len(splits.val) == 10 and len(splits.eval) == 10
    assert splits.eval.images.shape[1:] == (32, 32, 3)  # resized to the recipe's input size


def test_teacher_from_whole_model_file_and_torchscript(tmp_path):
    model = cifar_resnet("resnet20").eval()
    x = torch.randn(2, 3, SIZE, SIZE)
    torch.save(model, tmp_path / "whole.pt")
    torch.jit.save(torch.jit.trace(model, x), tmp_path / "scripted.pt")
    for name in ("whole.pt", "scripted.pt"):
        teacher = build_model(ModelSource(kind="file", path=str(tmp_path / name)))
        assert torch.allclose(teacher(x), model(x), atol=1e-5)


def test_teacher_file_that_is_a_state_dict_is_refused(tmp_path):
    torch.save(cifar_resnet("resnet20").state_dict(), tmp_path / "weights.pt")
    with pytest.raises(RecipeError, match="not a whole nn.Module"):
        build_model(ModelSource(kind="file", path=str(tmp_path / "weights.pt")))


def test_pretrained_cifar_teacher_loads_its_checkpoint(shared_data):
    checkpoint = shared_data / "weights" / "cifar10_resnet20-12fca82f.th"
    teacher = build_model(ModelSource(kind="cifar_resnet", arch="resnet20", checkpoint=str(checkpoint)))
    assert not torch.equal(teacher.conv1.weight, cifar_resnet("resnet20").conv1.weight)
    wrong = ModelSource(kind="cifar_resnet", arch="resnet32", checkpoint=str(checkpoint))
    with pytest.raises(RecipeError, match="does not fit"):
        build_model(wrong)
