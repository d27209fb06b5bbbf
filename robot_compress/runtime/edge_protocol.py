"""Open Inference Protocol v2 tensors <-> numpy, shared by the edge server and the edge client.

Both sides speak the v2 datatype strings ("FP32", ...) and send tensors as raw little-endian
bytes in `raw_input_contents` / `raw_output_contents`; the typed `contents` fields are accepted
on input because some clients (and the protocol's own examples) use them.
"""

from __future__ import annotations

import numpy as np

# v2 datatype -> numpy dtype (little-endian, as the protocol's raw contents are).
V2_TO_NUMPY: dict[str, np.dtype] = {
    "BOOL": np.dtype("bool"),
    "UINT8": np.dtype("<u1"), "UINT16": np.dtype("<u2"), "UINT32": np.dtype("<u4"), "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"), "INT16": np.dtype("<i2"), "INT32": np.dtype("<i4"), "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"), "FP32": np.dtype("<f4"), "FP64": np.dtype("<f8"),
}

# The typed field of InferTensorContents that carries each datatype (FP16 has none: raw only).
CONTENTS_FIELD = {
    "BOOL": "bool_contents",
    "UINT8": "uint_contents", "UINT16": "uint_contents", "UINT32": "uint_contents", "UINT64": "uint64_contents",
    "INT8": "int_contents", "INT16": "int_contents", "INT32": "int_contents", "INT64": "int64_contents",
    "FP32": "fp32_contents", "FP64": "fp64_contents",
}


class TensorDecodeError(ValueError):
    """A tensor's bytes or contents do not match its declared datatype and shape."""


def element_count(shape: tuple[int, ...] | list[int]) -> int:
    count = 1
    for dim in shape:
        count *= int(dim)
    return count


def from_raw(raw: bytes, datatype: str, shape: tuple[int, ...], name: str) -> np.ndarray:
    """A read-only array viewing `raw`; the byte count must match datatype x shape exactly."""
    dtype = V2_TO_NUMPY[datatype]
    expected = element_count(shape) * dtype.itemsize
    if len(raw) != expected:
        raise TensorDecodeError(f"tensor '{name}': raw contents are {len(raw)} bytes, but {datatype} "
                                f"of shape {list(shape)} needs {expected} bytes")
    return np.frombuffer(raw, dtype=dtype).reshape(shape)


def from_contents(contents, datatype: str, shape: tuple[int, ...], name: str) -> np.ndarray:
    """An array from the typed `contents` field of an InferInputTensor."""
    field = CONTENTS_FIELD.get(datatype)
    if field is None:
        raise TensorDecodeError(f"tensor '{name}': datatype {datatype} can only be sent as raw contents")
    values = getattr(contents, field)
    expected = element_count(shape)
    if len(values) != expected:
        raise TensorDecodeError(f"tensor '{name}': contents.{field} has {len(values)} values, but shape "
                                f"{list(shape)} needs {expected}")
    return np.asarray(values, dtype=V2_TO_NUMPY[datatype]).reshape(shape)
