"""sensor_msgs Image/CompressedImage <-> numpy, with cv_bridge where installed and numpy otherwise.

Both paths check the same things first (encoding, size, data length against step x height) and
raise ImageError, so a bad frame is a counted error in the node, never a crash.
"""

from __future__ import annotations

import numpy as np

from robot_compress.runtime.errors import ImageError
from robot_compress.runtime.preprocess import (
    MAX_IMAGE_PIXELS,
    channels_of,
    check_image,
    check_image_size,
    decode_image,
)

try:
    from cv_bridge import CvBridge, CvBridgeError

    _BRIDGE = CvBridge()
except ImportError:
    _BRIDGE = None


def check_header(encoding: str, height: int, width: int, step: int, size: int,
                 max_pixels: int = MAX_IMAGE_PIXELS) -> int:
    """Validate an Image's layout fields against its data length; return the channel count."""
    channels = channels_of(encoding)
    if height <= 0 or width <= 0:
        raise ImageError(f"image has zero size ({width}x{height})")
    check_image_size(width, height, max_pixels)
    if step < width * channels:
        raise ImageError(f"step {step} is smaller than width {width} x {channels} bytes per pixel")
    if size != step * height:
        raise ImageError(f"image data has {size} bytes, expected step {step} x height {height} = {step * height}")
    return channels


def numpy_from_image(encoding: str, height: int, width: int, step: int, data,
                     max_pixels: int = MAX_IMAGE_PIXELS) -> np.ndarray:
    """HxWxC uint8 view of an Image's data; rows padded to `step` bytes are cut to the width."""
    buffer = np.frombuffer(data, dtype=np.uint8)
    channels = check_header(encoding, height, width, step, buffer.size, max_pixels)
    rows = buffer.reshape(height, step)[:, : width * channels]
    return rows.reshape(height, width, channels)


def image_to_array(msg, max_pixels: int = MAX_IMAGE_PIXELS) -> tuple[np.ndarray, str]:
    """A sensor_msgs/Image as (HxWxC uint8 array, encoding); larger than `max_pixels` -> ImageError
    before it is resized."""
    if _BRIDGE is None:
        return numpy_from_image(msg.encoding, msg.height, msg.width, msg.step, msg.data, max_pixels), msg.encoding
    check_header(msg.encoding, msg.height, msg.width, msg.step, len(msg.data), max_pixels)
    try:
        array = _BRIDGE.imgmsg_to_cv2(msg, desired_encoding="passthrough")
    except CvBridgeError as exc:
        raise ImageError(f"cv_bridge could not convert the image: {exc}") from exc
    return (array[:, :, None] if array.ndim == 2 else array), msg.encoding


def compressed_to_array(msg, max_pixels: int = MAX_IMAGE_PIXELS) -> tuple[np.ndarray, str]:
    """A sensor_msgs/CompressedImage (JPEG/PNG) as (HxWx3 bgr8 array, "bgr8"); its declared size is
    checked against `max_pixels` before it is decoded."""
    return decode_image(bytes(msg.data), max_pixels), "bgr8"


def array_to_image(array: np.ndarray, encoding: str, msg=None):
    """Fill (or make) a sensor_msgs/Image from an HxWxC uint8 array. Assigns `bytes`: setting the
    data field from a numpy array goes element by element (about 60 ms at 640x480)."""
    if msg is None:
        from sensor_msgs.msg import Image

        msg = Image()
    array = np.ascontiguousarray(check_image(array, encoding))
    channels = array.shape[2]
    msg.height, msg.width = int(array.shape[0]), int(array.shape[1])
    msg.encoding, msg.is_bigendian, msg.step = encoding, 0, int(array.shape[1] * channels)
    msg.data = array.tobytes()
    return msg
