"""The one preprocessing function: encodings, sizes, layouts, and the errors for bad images."""

from __future__ import annotations

import time

import cv2
import numpy as np
import pytest

from robot_compress.runtime.errors import ImageError
from robot_compress.runtime.model_contract import Preprocessing
from robot_compress.runtime.preprocess import MAX_IMAGE_PIXELS, decode_image, preprocess, preprocess_batch
from tests.image_bombs import jpeg_bomb, png_bomb

SPEC = Preprocessing(input_size=(32, 32), mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))


def _reference(rgb: np.ndarray) -> np.ndarray:
    """The normalisation written out by hand, to compare the vectorised code with."""
    x = rgb.astype(np.float64) / 255.0
    x = (x - np.array(SPEC.mean)) / np.array(SPEC.std)
    return x.transpose(2, 0, 1)[None]


def test_rgb_at_model_size_is_normalised_exactly():
    rgb = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    out = preprocess(rgb, "rgb8", SPEC)
    assert out.shape == (1, 3, 32, 32) and out.dtype == np.float32
    np.testing.assert_allclose(out, _reference(rgb), atol=1e-5)


def test_bgr_is_flipped_to_the_models_rgb():
    rgb = np.random.default_rng(1).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    np.testing.assert_array_equal(preprocess(rgb[:, :, ::-1].copy(), "bgr8", SPEC), preprocess(rgb, "rgb8", SPEC))


def test_bgr_model_gets_bgr_channels():
    rgb = np.random.default_rng(2).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    bgr_spec = Preprocessing(input_size=(32, 32), mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), channel_order="BGR")
    out = preprocess(rgb, "rgb8", bgr_spec)
    np.testing.assert_allclose(out[0, 0], rgb[:, :, 2] / 255.0, atol=1e-6)


@pytest.mark.parametrize("shape", [(32, 32), (32, 32, 1)])
def test_mono_is_replicated_to_three_channels(shape):
    mono = np.random.default_rng(3).integers(0, 256, shape, dtype=np.uint8)
    out = preprocess(mono, "mono8", SPEC)
    gray = mono.reshape(32, 32)
    for c in range(3):
        np.testing.assert_allclose(out[0, c], (gray / 255.0 - SPEC.mean[c]) / SPEC.std[c], atol=1e-5)


def test_camera_sized_image_is_resized_and_nearest_upscale_round_trips():
    """sim_camera upscales 32x32 with INTER_NEAREST to 640x480; INTER_AREA gets the pixels back."""
    rgb = np.random.default_rng(4).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    big = cv2.resize(rgb, (640, 480), interpolation=cv2.INTER_NEAREST)
    np.testing.assert_allclose(preprocess(big, "rgb8", SPEC), preprocess(rgb, "rgb8", SPEC), atol=1e-5)


def test_nhwc_layout():
    spec = Preprocessing(input_size=(16, 24), mean=(0, 0, 0), std=(1, 1, 1), layout="NHWC")
    out = preprocess(np.zeros((100, 50, 3), np.uint8), "rgb8", spec)
    assert out.shape == (1, 16, 24, 3)


def test_batch_stacks_images():
    images = np.zeros((5, 32, 32, 3), np.uint8)
    assert preprocess_batch(images, "rgb8", SPEC).shape == (5, 3, 32, 32)


@pytest.mark.parametrize(
    ("image", "encoding", "message"),
    [
        (np.zeros((32, 32, 3), np.uint8), "yuv422", "unsupported image encoding 'yuv422'"),
        (np.zeros((32, 32, 3), np.float32), "rgb8", "dtype must be uint8"),
        (np.zeros((32, 32, 4), np.uint8), "rgb8", r"must have shape HxWx3, got \(32, 32, 4\)"),
        (np.zeros((32, 32), np.uint8), "bgr8", "must have shape HxWx3"),
        (np.zeros((32, 32, 3), np.uint8), "mono8", "must have shape HxWx1 or HxW"),
        (np.zeros((0, 32, 3), np.uint8), "rgb8", "zero size"),
        ([[1, 2, 3]], "rgb8", "must be a numpy array"),
    ],
)
def test_bad_images_are_named(image, encoding, message):
    with pytest.raises(ImageError, match=message):
        preprocess(image, encoding, SPEC)


def test_bad_batch():
    with pytest.raises(ImageError, match="non-empty"):
        preprocess_batch(np.zeros((0, 32, 32, 3), np.uint8), "rgb8", SPEC)


def test_decode_png_round_trip_and_corrupt_data():
    bgr = np.random.default_rng(5).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    ok, png = cv2.imencode(".png", bgr)
    assert ok
    np.testing.assert_array_equal(decode_image(png.tobytes()), bgr)
    ok, jpeg = cv2.imencode(".jpg", bgr)
    with pytest.raises(ImageError, match="could not decode"):
        decode_image(jpeg.tobytes()[:40])
    with pytest.raises(ImageError, match="empty"):
        decode_image(b"")
    with pytest.raises(ImageError, match=r"no known image format; it starts with b'<html>\\n<'\)$"):
        decode_image(b"<html>\n<body>503 Service Unavailable</body></html>")


def test_camera_sized_bgr_and_mono_match_converting_first():
    """Resizing before reordering channels gives what converting the full frame first would."""
    rng = np.random.default_rng(6)
    rgb = rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)
    converted_first = cv2.resize(rgb, (32, 32), interpolation=cv2.INTER_AREA)
    np.testing.assert_allclose(preprocess(rgb[:, :, ::-1].copy(), "bgr8", SPEC), _reference(converted_first), atol=1e-5)
    mono = rng.integers(0, 256, (480, 640), dtype=np.uint8)
    mono_first = cv2.resize(np.repeat(mono[:, :, None], 3, axis=2), (32, 32), interpolation=cv2.INTER_AREA)
    np.testing.assert_allclose(preprocess(mono, "mono8", SPEC), _reference(mono_first), atol=1e-5)


@pytest.mark.parametrize("bomb, declared", [(jpeg_bomb, "30000x30000"), (png_bomb, "15000x15000")],
                         ids=["jpeg", "png"])
def test_decompression_bomb_is_refused_from_its_header(bomb, declared):
    data = bomb()
    assert len(data) < 1000
    started = time.monotonic()
    with pytest.raises(ImageError, match=f"{declared} = .* pixels is over the limit of {MAX_IMAGE_PIXELS}"):
        decode_image(data)
    assert time.monotonic() - started < 1.0  # read from the header, not decoded (that takes seconds)


def test_image_at_the_limit_is_decoded_and_the_limit_is_a_parameter():
    ok, png = cv2.imencode(".png", np.zeros((40, 50, 3), np.uint8))
    assert decode_image(png.tobytes(), max_pixels=2000).shape == (40, 50, 3)
    with pytest.raises(ImageError, match="50x40 = 2000 pixels is over the limit of 1999"):
        decode_image(png.tobytes(), max_pixels=1999)
