"""Open Inference Protocol tensors: JSON data or Triton's binary layout -> numpy, and back.

Numeric features take any FP/INT datatype; categorical ones take BYTES, which in the
binary layout are 4-byte little-endian lengths followed by the bytes. Every check
names the input (`inputs[2].data`) so a client sees what to fix.
"""

from __future__ import annotations

import math
import struct
from typing import Any

import msgspec
import numpy as np

from driftline.inference.contract import Array
from driftline.inference.errors import InvalidInputError

NUMERIC_TYPES: dict[str, type[np.generic]] = {
    "FP16": np.float16,
    "FP32": np.float32,
    "FP64": np.float64,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "UINT8": np.uint8,
    "UINT16": np.uint16,
    "UINT32": np.uint32,
    "UINT64": np.uint64,
}


class TensorInput(msgspec.Struct):
    name: str
    shape: list[int]
    datatype: str
    data: list[Any] | None = None
    parameters: dict[str, Any] | None = None


def tensor_array(tensor: TensorInput, chunk: memoryview | None, where: str, numeric: bool) -> Array:
    count = math.prod(tensor.shape)
    if tensor.shape and min(tensor.shape) < 0:
        raise InvalidInputError(
            f"shape {tensor.shape} has a negative dimension", field=f"{where}.shape"
        )
    if numeric:
        dtype = NUMERIC_TYPES.get(tensor.datatype)
        if dtype is None:
            raise InvalidInputError(
                f"{tensor.name} is numeric: datatype must be one of {sorted(NUMERIC_TYPES)}, "
                f"got {tensor.datatype!r}",
                field=f"{where}.datatype",
            )
        if chunk is not None:
            if len(chunk) != count * np.dtype(dtype).itemsize:
                raise InvalidInputError(
                    f"binary data of {len(chunk)} bytes does not hold {count} {tensor.datatype}",
                    field=f"{where}.parameters.binary_data_size",
                )
            return np.frombuffer(chunk, dtype=dtype)
        array = _numbers(tensor, where)
    else:
        if tensor.datatype != "BYTES":
            raise InvalidInputError(
                f"{tensor.name} is categorical: datatype must be BYTES, got {tensor.datatype!r}",
                field=f"{where}.datatype",
            )
        if chunk is not None:
            array = np.array(_decode_bytes_tensor(chunk, where), dtype=object)
        else:
            flat = np.asarray(tensor.data if tensor.data is not None else [], dtype=object)
            flat = flat.reshape(-1)
            if not all(isinstance(v, str | int) and not isinstance(v, bool) for v in flat):
                raise InvalidInputError(
                    f"{tensor.name} needs strings in data", field=f"{where}.data"
                )
            array = np.array([str(v) for v in flat], dtype=object)
    if array.size != count:
        raise InvalidInputError(
            f"data has {array.size} elements, shape {tensor.shape} needs {count}",
            field=f"{where}.data",
        )
    return array


_PLAIN_NUMBERS = frozenset({int, float})


def _numbers(tensor: TensorInput, where: str) -> Array:
    """The numbers of a numeric tensor's JSON `data`, refused unless all are numbers."""
    data = tensor.data if tensor.data is not None else []
    if set(map(type, data)) <= _PLAIN_NUMBERS:
        # The usual body, a flat list of numbers: its types checked at C speed, without
        # the walks below (nothing to refuse; only an integer beyond int64 needs float64).
        array = np.asarray(data)
        return array if array.dtype != object else np.asarray(data, dtype=np.float64)
    try:
        array = np.asarray(data)
    except ValueError as exc:
        raise InvalidInputError(f"data is ragged: {exc}", field=f"{where}.data") from exc
    if array.dtype == object and _numbers_only(data):
        array = np.asarray(data, dtype=np.float64)  # integers beyond int64
    if array.size and (array.dtype.kind not in "fiu" or _has_bool(data)):
        raise InvalidInputError(f"{tensor.name} needs numbers in data", field=f"{where}.data")
    return array


def _has_bool(data: list[Any]) -> bool:
    """numpy reads `[true, 2.5]` as `[1.0, 2.5]`; a boolean is no number for a feature
    (`driftline.common.feature_values`)."""
    return any(v is True or v is False or (type(v) is list and _has_bool(v)) for v in data)


def _numbers_only(data: list[Any]) -> bool:
    return all(type(v) in (int, float) or (type(v) is list and _numbers_only(v)) for v in data)


def _decode_bytes_tensor(chunk: memoryview, where: str) -> list[str]:
    out: list[str] = []
    offset = 0
    data = bytes(chunk)
    while offset < len(data):
        if offset + 4 > len(data):
            raise InvalidInputError("truncated BYTES element", field=where)
        (length,) = struct.unpack_from("<I", data, offset)
        offset += 4
        if offset + length > len(data):
            raise InvalidInputError("truncated BYTES element", field=where)
        try:
            out.append(data[offset : offset + length].decode())
        except UnicodeDecodeError as exc:
            raise InvalidInputError("a BYTES element is not UTF-8 text", field=where) from exc
        offset += length
    return out


def bytes_tensor(values: list[str]) -> bytes:
    parts = []
    for value in values:
        raw = value.encode()
        parts.append(struct.pack("<I", len(raw)))
        parts.append(raw)
    return b"".join(parts)
