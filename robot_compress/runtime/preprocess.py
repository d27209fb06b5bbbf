"""The one preprocessing function: camera image -> model input tensor, exactly as the manifest says.

The node (robot), the edge client and the offline evaluator all call `preprocess`, so the edge
server and the local model see the same tensor for the same frame and their answers compare.
"""

from __future__ import annotations

import struct

import cv2
import numpy as np

from robot_compress.runtime.errors import ImageError
from robot_compress.runtime.model_contract import Preprocessing

# Largest image accepted, in pixels, checked before anything is decoded or resized: a 675-byte JPEG
# can declare 30000x30000 and cost gigabytes to decode. 8192x4096 covers 4K/UHD cameras and 24 MP
# machine-vision sensors (6000x4000); raise it per call (`max_pixels`) for larger ones.
MAX_IMAGE_PIXELS = 8192 * 4096

CHANNELS = {"rgb8": 3, "bgr8": 3, "mono8": 1}  # the encodings the robot takes, and bytes per pixel
ENCODINGS = tuple(CHANNELS)
_INTERPOLATION = {"area": cv2.INTER_AREA, "linear": cv2.INTER_LINEAR,
                  "nearest": cv2.INTER_NEAREST, "cubic": cv2.INTER_CUBIC}


def channels_of(encoding: str) -> int:
    """Bytes per pixel of a supported encoding; ImageError naming the supported ones otherwise."""
    if encoding not in CHANNELS:
        raise ImageError(f"unsupported image encoding {encoding!r}; supported: {', '.join(ENCODINGS)}")
    return CHANNELS[encoding]


def check_image(image: object, encoding: str) -> np.ndarray:
    """Validate dtype, shape and encoding; return the image as HxWxC (C=3, or 1 for mono8)."""
    channels = channels_of(encoding)
    if not isinstance(image, np.ndarray):
        raise ImageError(f"image must be a numpy array, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise ImageError(f"image dtype must be uint8 for {encoding}, got {image.dtype}")
    if encoding == "mono8" and image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3 or image.shape[2] != channels:
        raise ImageError(f"{encoding} image must have shape HxWx{channels}"
                         f"{' or HxW' if channels == 1 else ''}, got {tuple(image.shape)}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ImageError(f"image has zero size {tuple(image.shape)}")
    return image


def to_model_channels(image: np.ndarray, encoding: str, channel_order: str) -> np.ndarray:
    """HxWx3 uint8 in the model's channel order (mono8 is replicated to three channels)."""
    image = check_image(image, encoding)
    if encoding == "mono8":
        return np.repeat(image, 3, axis=2)
    if (encoding == "rgb8") == (channel_order == "RGB"):
        return image
    return image[:, :, ::-1]


def preprocess(image: np.ndarray, encoding: str, spec: Preprocessing) -> np.ndarray:
    """One image of any size -> float32 tensor of shape (1, C, H, W) or (1, H, W, C) per `spec.layout`.

    Resizes before reordering channels: each channel is resized on its own, so the result is the
    same, and a camera frame is not copied in full just to swap its channels (8x faster for bgr8).
    """
    pixels = check_image(image, encoding)
    height, width = spec.input_size
    if pixels.shape[:2] != (height, width):
        resized = cv2.resize(pixels, (width, height), interpolation=_INTERPOLATION[spec.interpolation])
        pixels = resized.reshape(height, width, pixels.shape[2])  # cv2 drops a single channel's axis
    pixels = to_model_channels(pixels, encoding, spec.channel_order)
    scale = np.float32(spec.scale)
    mean = np.asarray(spec.mean, dtype=np.float32)
    inv_std = np.float32(1.0) / np.asarray(spec.std, dtype=np.float32)
    tensor = (pixels.astype(np.float32) * scale - mean) * inv_std
    if spec.layout == "NCHW":
        tensor = tensor.transpose(2, 0, 1)
    return np.ascontiguousarray(tensor[None])


def preprocess_batch(images: np.ndarray, encoding: str, spec: Preprocessing) -> np.ndarray:
    """A stack of images (NxHxWxC uint8) -> one batched input tensor."""
    if not isinstance(images, np.ndarray) or images.ndim not in (3, 4) or len(images) == 0:
        raise ImageError(f"expected a non-empty NxHxWxC uint8 array, got "
                         f"{getattr(images, 'shape', type(images).__name__)}")
    return np.concatenate([preprocess(img, encoding, spec) for img in images])


def check_image_size(width: int, height: int, max_pixels: int = MAX_IMAGE_PIXELS) -> None:
    """ImageError if a width x height image is larger than `max_pixels`."""
    if width * height > max_pixels:
        raise ImageError(f"image of {width}x{height} = {width * height} pixels is over the limit of "
                         f"{max_pixels} pixels (max_pixels); refusing to decode or resize it")


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}  # frame headers


def _png_size(data: bytes) -> tuple[int, int] | None:
    if data[:8] == PNG_SIGNATURE and data[12:16] == b"IHDR" and len(data) >= 24:
        return struct.unpack(">II", data[16:24])
    return None


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    """Walk the marker segments to the first frame header (SOFn), which holds height and width."""
    if data[:2] != b"\xff\xd8":
        return None
    at = 2
    while at + 9 <= len(data):
        if data[at] != 0xFF:
            return None
        marker = data[at + 1]
        if marker == 0xFF:  # fill byte
            at += 1
            continue
        if marker in (0x01, *range(0xD0, 0xD8)):  # markers without a length
            at += 2
            continue
        if marker in JPEG_SOF:
            height, width = struct.unpack(">HH", data[at + 5:at + 9])
            return width, height
        at += 2 + struct.unpack(">H", data[at + 2:at + 4])[0]
    return None


def declared_size(data: bytes) -> tuple[int, int]:
    """(width, height) as the compressed image's header declares it, reading only the header, so
    a decompression bomb costs nothing to measure: PNG and JPEG here, other formats with Pillow's
    lazy open (which reads only the header too)."""
    size = _png_size(data) or _jpeg_size(data)
    if size is not None:
        return size
    import io
    import warnings

    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as header:
                return header.size
    except Image.DecompressionBombError as exc:  # Pillow's own limit, far above ours
        raise ImageError(f"compressed image declares a size over the limit: {exc}") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        # Pillow names no format for bytes it does not recognise (only its buffer object): the
        # first bytes tell a user what was sent instead (text, an error page, raw pixels).
        reason = "no known image format" if isinstance(exc, UnidentifiedImageError) else str(exc)
        raise ImageError(f"could not decode compressed image ({len(data)} bytes): corrupt or unsupported "
                         f"format ({reason}; it starts with {data[:8]!r})") from None


def decode_image(data: bytes, max_pixels: int = MAX_IMAGE_PIXELS) -> np.ndarray:
    """Decode PNG/JPEG/... bytes to a bgr8 HxWx3 array (OpenCV's order). The size its header
    declares is checked against `max_pixels` first; corrupt or too large -> ImageError."""
    if not data:
        raise ImageError("compressed image is empty")
    check_image_size(*declared_size(data), max_pixels)
    image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise ImageError(f"could not decode compressed image ({len(data)} bytes): corrupt or unsupported format")
    check_image_size(image.shape[1], image.shape[0], max_pixels)  # in case the header lied
    return image
