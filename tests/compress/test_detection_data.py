"""Detector training data: coco/train decoded once, and the label-free mosaic/affine/flip/HSV augmentation."""

from __future__ import annotations

import numpy as np
import pytest

from robot_compress.compress.detection.data import Augment, augmented, augmented_batch, load_detection_images

SIZE = 160


@pytest.fixture(scope="module")
def images(shared_data):
    return load_detection_images(shared_data / "coco" / "train", SIZE, limit=6)


def test_images_are_decoded_with_their_long_side_fitted(images):
    assert len(images) == 6 and all(max(image.shape[:2]) == SIZE for image in images.images)
    assert images.entries[0]["file_name"].endswith(".jpg")
    boxed = images.letterboxed(SIZE, 2)
    assert boxed.shape == (2, SIZE, SIZE, 3) and boxed.dtype == np.uint8


def test_augmentation_is_seeded_and_varied(images):
    first = augmented_batch(images, [0, 1, 2], SIZE, np.random.default_rng(7))
    again = augmented_batch(images, [0, 1, 2], SIZE, np.random.default_rng(7))
    other = augmented_batch(images, [0, 1, 2], SIZE, np.random.default_rng(8))
    assert first.shape == (3, SIZE, SIZE, 3) and first.dtype == np.uint8
    assert np.array_equal(first, again)
    assert np.abs(first.astype(int) - other.astype(int)).mean() > 10


def test_mosaic_mixes_four_images_and_no_augmentation_is_the_letterbox(images):
    plain = Augment(mosaic=0.0, scale=(1.0, 1.0), degrees=0.0, translate=0.0, shear=0.0, flip=0.0, hsv=(0, 0, 0))
    unchanged = augmented(images, 0, SIZE, np.random.default_rng(0), plain)
    assert np.abs(unchanged.astype(int) - images.letterboxed(SIZE, 1)[0].astype(int)).max() <= 1
    flipped = augmented(images, 0, SIZE, np.random.default_rng(0), Augment(
        mosaic=0.0, scale=(1.0, 1.0), degrees=0.0, translate=0.0, shear=0.0, flip=1.0, hsv=(0, 0, 0)))
    assert np.abs(flipped.astype(int) - unchanged[:, ::-1].astype(int)).max() <= 1
    # mosaic only: a 2x canvas of four images seen at scale 1 around its centre, so pixels of
    # more than one source image appear (the letterbox of image 0 alone has a constant pad band)
    mosaic = augmented(images, 0, SIZE, np.random.default_rng(3), Augment(
        mosaic=1.0, scale=(1.0, 1.0), degrees=0.0, translate=0.0, shear=0.0, flip=0.0, hsv=(0, 0, 0)))
    assert not np.array_equal(mosaic, unchanged)
    assert (mosaic != 114).any(axis=2).mean() > 0.5


def test_a_folder_that_is_not_coco_is_named(tmp_path):
    with pytest.raises(ValueError, match="is not a COCO folder"):
        load_detection_images(tmp_path, SIZE)
