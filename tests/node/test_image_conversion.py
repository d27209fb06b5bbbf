"""sensor_msgs <-> numpy: step padding, encodings, bad input. The numpy conversion is tested
directly, and image_to_array through whichever path this machine has (cv_bridge or numpy)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from sensor_msgs.msg import CompressedImage, Image

from robot_compress.ros.image_conversion import (
    array_to_image,
    check_header,
    compressed_to_array,
    image_to_array,
    numpy_from_image,
)
from robot_compress.runtime.errors import ImageError
from tests.image_bombs import jpeg_bomb, png_bomb

RNG = np.random.default_rng(0)


def numpy_to_array(msg) -> tuple[np.ndarray, str]:
    """The numpy path of image_to_array, whether or not cv_bridge is installed."""
    return numpy_from_image(msg.encoding, msg.height, msg.width, msg.step, msg.data), msg.encoding


CONVERTERS = pytest.mark.parametrize("to_array", [numpy_to_array, image_to_array], ids=["numpy", "installed"])


@CONVERTERS
@pytest.mark.parametrize("encoding, channels", [("rgb8", 3), ("bgr8", 3), ("mono8", 1)])
def test_round_trip(to_array, encoding, channels):
    pixels = RNG.integers(0, 256, (5, 7, channels), dtype=np.uint8)
    msg = array_to_image(pixels, encoding)
    assert (msg.height, msg.width, msg.step, msg.encoding) == (5, 7, 7 * channels, encoding)
    array, got_encoding = to_array(msg)
    assert got_encoding == encoding and np.array_equal(array, pixels)


@CONVERTERS
def test_padded_rows_are_cut_to_the_width(to_array):
    pixels = RNG.integers(0, 256, (4, 3, 3), dtype=np.uint8)
    step = 3 * 3 + 7  # e.g. a driver aligning rows to 16 bytes
    padded = np.full((4, step), 0xAB, dtype=np.uint8)
    padded[:, :9] = pixels.reshape(4, 9)
    msg = Image(height=4, width=3, encoding="rgb8", step=step)
    msg.data = padded.tobytes()
    array, _ = to_array(msg)
    assert np.array_equal(array, pixels)


@CONVERTERS
def test_mono_from_a_two_dimensional_array(to_array):
    msg = array_to_image(np.arange(12, dtype=np.uint8).reshape(3, 4), "mono8")
    array, _ = to_array(msg)
    assert array.shape == (3, 4, 1) and array[2, 3, 0] == 11


def _image(encoding="rgb8", height=2, width=2, step=6, size=12):
    msg = Image(height=height, width=width, encoding=encoding, step=step)
    msg.data = bytes(size)
    return msg


@pytest.mark.parametrize("msg, message", [
    (_image(encoding="16UC1"), "unsupported image encoding '16UC1'"),
    (_image(encoding="rgba8"), "unsupported image encoding"),
    (_image(height=0, size=0), "zero size"),
    (_image(width=0, step=0, size=0), "zero size"),
    (_image(size=11), "11 bytes, expected step 6 x height 2 = 12"),
    (_image(size=0), "0 bytes"),
    (_image(step=5, size=10), "step 5 is smaller than width 2 x 3"),
])
@CONVERTERS
def test_bad_images_raise_image_error(to_array, msg, message):
    with pytest.raises(ImageError, match=message.replace("(", r"\(").replace(")", r"\)")):
        to_array(msg)


def test_compressed_jpeg_decodes_to_bgr():
    bgr = np.zeros((16, 16, 3), dtype=np.uint8)
    bgr[:, :, 2] = 255  # red in OpenCV's order
    ok, jpeg = cv2.imencode(".jpg", bgr)
    msg = CompressedImage(format="jpeg")
    msg.data = jpeg.tobytes()
    array, encoding = compressed_to_array(msg)
    assert encoding == "bgr8" and array.shape == (16, 16, 3) and array[8, 8, 2] > 240 and array[8, 8, 0] < 15


@pytest.mark.parametrize("payload", [b"", b"\xff\xd8\xff\xe0 not really a jpeg", bytes(100)])
def test_corrupt_compressed_images_raise_image_error(payload):
    msg = CompressedImage(format="jpeg")
    msg.data = payload
    with pytest.raises(ImageError):
        compressed_to_array(msg)


def test_array_to_image_rejects_wrong_arrays():
    with pytest.raises(ImageError):
        array_to_image(np.zeros((4, 4, 3), dtype=np.float32), "rgb8")
    with pytest.raises(ImageError):
        array_to_image(np.zeros((4, 4, 1), dtype=np.uint8), "rgb8")
    with pytest.raises(ImageError, match="unsupported"):
        array_to_image(np.zeros((4, 4, 3), dtype=np.uint8), "yuv422")


@pytest.mark.parametrize("bomb", [jpeg_bomb, png_bomb], ids=["jpeg", "png"])
def test_compressed_bomb_is_refused_before_decoding(bomb):
    msg = CompressedImage(format="jpeg")
    msg.data = bomb()
    with pytest.raises(ImageError, match="is over the limit"):
        compressed_to_array(msg)


def test_raw_image_over_the_pixel_limit_is_refused():
    with pytest.raises(ImageError, match="64x48 = 3072 pixels is over the limit of 3000"):
        check_header("rgb8", 48, 64, 64 * 3, 48 * 64 * 3, max_pixels=3000)
    assert check_header("rgb8", 48, 64, 64 * 3, 48 * 64 * 3, max_pixels=3072) == 3
def test_nothing_builds_images_with_cv_bridge():
    """cv_bridge's cv2_to_imgmsg fails with OpenCV 5 when cv_bridge was built for OpenCV 4;
    images are built with array_to_image instead."""
    from pathlib import Path

    import robot_compress

    package = Path(robot_compress.__file__).parent
    users = [str(p.relative_to(package)) for p in package.rglob("*.py") if "cv2_to_imgmsg" in p.read_text()]
    assert not users, users
