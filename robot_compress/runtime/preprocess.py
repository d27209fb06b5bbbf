"""The one preprocessing function: camera image -> model input tensor, exactly as the manifest says.

The node (robot), the edge client and the offline evaluator all call `preprocess`, so the edge
server and the local model see the same tensor for the same frame and their answers compare.
"""

from __future__ import annotations

import cv2
import numpy as np

from robot_compress.runtime.errors import ImageError
from robot_compress.runtime.model_contract import Preprocessing

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


def decode_image(data: bytes) -> np.ndarray:
    """Decode PNG/JPEG/... bytes to a bgr8 HxWx3 array (OpenCV's order); corrupt data -> ImageError."""
    if not data:
        raise ImageError("compressed image is empty")
    image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise ImageError(f"could not decode compressed image ({len(data)} bytes): corrupt or unsupported format")
    return image
