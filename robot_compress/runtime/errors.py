"""Errors raised by the runtime, each naming the file, field or value that is wrong."""


class RobotCompressError(Exception):
    """Base class, so callers can catch everything this package raises on bad input."""


class ModelError(RobotCompressError):
    """A model directory is missing, corrupt or inconsistent (files, hash, ONNX graph)."""


class ManifestError(ModelError):
    """manifest.json or config.pbtxt is missing a field or has one of the wrong type/value."""


class ImageError(RobotCompressError, ValueError):
    """An input image has the wrong dtype, shape, size or encoding."""
