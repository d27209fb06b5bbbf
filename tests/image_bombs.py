"""Tiny compressed images whose headers declare a huge size (decompression bombs), made at test time."""

from __future__ import annotations

import struct
import zlib

import cv2
import numpy as np

SOF_MARKERS = {0xC0, 0xC1, 0xC2}  # baseline, extended, progressive: what OpenCV writes


def jpeg_bomb(width: int = 30000, height: int = 30000) -> bytes:
    """A real 8x8 JPEG (a few hundred bytes) whose frame header claims width x height."""
    ok, encoded = cv2.imencode(".jpg", np.full((8, 8, 3), 128, np.uint8))
    data = bytearray(encoded.tobytes())
    at = 2
    while at < len(data):  # walk the marker segments to the frame header
        marker, length = data[at + 1], struct.unpack(">H", data[at + 2:at + 4])[0]
        if marker in SOF_MARKERS:
            data[at + 5:at + 9] = struct.pack(">HH", height, width)
            return bytes(data)
        at += 2 + length
    raise AssertionError("no SOF marker in OpenCV's JPEG")


def png_bomb(width: int = 15000, height: int = 15000) -> bytes:
    """A real 8x8 PNG whose IHDR claims width x height (with the chunk's CRC fixed)."""
    ok, encoded = cv2.imencode(".png", np.full((8, 8, 3), 128, np.uint8))
    data = bytearray(encoded.tobytes())
    assert data[12:16] == b"IHDR"
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)
