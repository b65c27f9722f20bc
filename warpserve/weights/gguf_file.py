"""The GGUF container: metadata, the tensor table, and each tensor's raw bytes.

Our own header parser rather than `gguf.GGUFReader`: the reader builds a numpy view per
vocabulary string (~100k for a small model), which alone takes seconds. Here string arrays
that nobody asked for are skipped, so opening a file costs milliseconds; tensor data is
memory-mapped and touched only when a tensor is read.

Layout (GGUF v2/v3, little-endian): magic "GGUF", u32 version, u64 tensor count, u64
metadata count; metadata as (string key, u32 type, value); the tensor table as (string
name, u32 n_dims, u64 dims[n_dims] fastest-moving first, u32 ggml type, u64 offset); then
the data section, starting at the next multiple of `general.alignment` (default 32).
"""

from __future__ import annotations

import mmap
import struct
from collections.abc import Collection
from dataclasses import dataclass, field
from math import prod
from pathlib import Path
from typing import Any

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

GGUF_MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)  # v1 counted with u32; no maintained tool writes it
DEFAULT_ALIGNMENT = 32

# metadata value type id -> struct format of the fixed-size scalars
_SCALAR_FORMATS = {
    0: "<B",
    1: "<b",
    2: "<H",
    3: "<h",
    4: "<I",
    5: "<i",
    6: "<f",
    7: "<?",
    10: "<Q",
    11: "<q",
    12: "<d",
}
_NUMPY_DTYPES = {0: "<u1", 1: "<i1", 2: "<u2", 3: "<i2", 4: "<u4", 5: "<i4", 6: "<f4", 7: "?"}
_NUMPY_DTYPES |= {10: "<u8", 11: "<i8", 12: "<f8"}
_STRING, _ARRAY = 8, 9


@dataclass(frozen=True)
class GGUFTensorInfo:
    name: str  # the GGUF name, e.g. "blk.0.attn_q.weight"
    ggml_type: GGMLQuantizationType
    shape: tuple[int, ...]  # torch order: slowest-moving first, e.g. [out_features, in_features]
    offset: int  # absolute byte offset of the data in the file
    num_bytes: int


@dataclass(frozen=True)
class GGUFFile:
    """An opened GGUF file. String arrays not asked for in `read_gguf` hold their length."""

    path: Path
    version: int
    metadata: dict[str, Any]
    tensors: tuple[GGUFTensorInfo, ...]
    _buffer: mmap.mmap = field(repr=False, compare=False)

    def raw_bytes(self, info: GGUFTensorInfo) -> np.ndarray:
        """The tensor's bytes as a uint8 view of the mapped file (copy-on-write, never written back)."""
        return np.frombuffer(self._buffer, dtype=np.uint8, count=info.num_bytes, offset=info.offset)


class _Cursor:
    """Reads little-endian values from the mapped header, turning overruns into one clear error."""

    def __init__(self, buffer: mmap.mmap, path: Path) -> None:
        self.buffer, self.path, self.pos = buffer, path, 0

    def unpack(self, fmt: str) -> Any:
        try:
            values = struct.unpack_from(fmt, self.buffer, self.pos)
        except struct.error:
            raise self.corrupt("the header ends early") from None
        self.pos += struct.calcsize(fmt)
        return values[0] if len(values) == 1 else values

    def string(self) -> str:
        length = self.unpack("<Q")
        end = self.pos + length
        if end > len(self.buffer):
            raise self.corrupt(f"a string of {length} bytes runs past the end of the file")
        raw, self.pos = self.buffer[self.pos : end], end
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise self.corrupt(f"a string at byte {end - length} is not UTF-8") from None

    def skip_strings(self, count: int) -> None:
        for _ in range(count):
            self.pos += 8 + self.unpack("<Q")
        if self.pos > len(self.buffer):
            raise self.corrupt("a string array runs past the end of the file")

    def corrupt(self, what: str) -> ValueError:
        return ValueError(f"GGUF file {self.path} is truncated or corrupt: {what}")


def read_gguf(path: Path, string_arrays: Collection[str] = ()) -> GGUFFile:
    """Parse the header of `path`; decode only the string arrays named in `string_arrays`."""
    buffer = _map(path)
    cursor = _Cursor(buffer, path)
    version, num_tensors, num_metadata = _read_preamble(cursor)
    metadata = {}
    for _ in range(num_metadata):
        key = cursor.string()
        metadata[key] = _read_value(cursor, cursor.unpack("<I"), key in string_arrays)
    entries = [_read_tensor_entry(cursor) for _ in range(num_tensors)]
    alignment = int(metadata.get("general.alignment", DEFAULT_ALIGNMENT))
    if alignment <= 0:
        raise cursor.corrupt(f"general.alignment is {alignment}")
    data_start = -(-cursor.pos // alignment) * alignment
    tensors = tuple(_tensor_info(cursor, data_start, *entry) for entry in entries)
    return GGUFFile(path, version, metadata, tensors, buffer)


def _map(path: Path) -> mmap.mmap:
    if path.stat().st_size == 0:
        raise ValueError(f"GGUF file {path} is empty")
    with path.open("rb") as handle:
        # ACCESS_COPY: numpy/torch views are writable (no read-only warnings); writes stay private
        return mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_COPY)


def _read_preamble(cursor: _Cursor) -> tuple[int, int, int]:
    if cursor.buffer[:4] != GGUF_MAGIC:
        raise ValueError(f"{cursor.path} is not a GGUF file: it does not start with b'GGUF'")
    cursor.pos = 4
    version = cursor.unpack("<I")
    if version not in SUPPORTED_VERSIONS:
        raise ValueError(
            f"GGUF file {cursor.path} has version {version}; supported: {SUPPORTED_VERSIONS} "
            "(little-endian). Re-convert it with a current llama.cpp"
        )
    return version, cursor.unpack("<Q"), cursor.unpack("<Q")


def _read_value(cursor: _Cursor, value_type: int, keep_strings: bool) -> Any:
    if value_type in _SCALAR_FORMATS:
        return cursor.unpack(_SCALAR_FORMATS[value_type])
    if value_type == _STRING:
        return cursor.string()
    if value_type != _ARRAY:
        raise cursor.corrupt(f"unknown metadata value type {value_type}")
    item_type, count = cursor.unpack("<IQ")
    if item_type in _NUMPY_DTYPES:
        dtype = np.dtype(_NUMPY_DTYPES[item_type])
        if cursor.pos + count * dtype.itemsize > len(cursor.buffer):
            raise cursor.corrupt("a metadata array runs past the end of the file")
        values = np.frombuffer(cursor.buffer, dtype=dtype, count=count, offset=cursor.pos).copy()
        cursor.pos += count * dtype.itemsize
        return values
    if item_type != _STRING:
        raise cursor.corrupt(f"unsupported metadata array item type {item_type}")
    if keep_strings:
        return [cursor.string() for _ in range(count)]
    cursor.skip_strings(count)  # a vocabulary or merge table nobody asked for
    return count


def _read_tensor_entry(cursor: _Cursor) -> tuple[str, tuple[int, ...], int, int]:
    name = cursor.string()
    num_dims = cursor.unpack("<I")
    if num_dims > 8:
        raise cursor.corrupt(f"tensor {name!r} claims {num_dims} dimensions")
    dims = struct.unpack_from(f"<{num_dims}Q", cursor.buffer, cursor.pos) if num_dims else ()
    cursor.pos += 8 * num_dims
    ggml_type, offset = cursor.unpack("<IQ")
    return name, tuple(reversed(dims)), ggml_type, offset


def _tensor_info(
    cursor: _Cursor, data_start: int, name: str, shape: tuple[int, ...], type_id: int, offset: int
) -> GGUFTensorInfo:
    try:
        ggml_type = GGMLQuantizationType(type_id)
    except ValueError:
        raise cursor.corrupt(f"tensor {name!r} has unknown ggml type id {type_id}") from None
    block_size, block_bytes = GGML_QUANT_SIZES[ggml_type]
    num_elements = prod(shape)
    if shape and shape[-1] % block_size:
        raise cursor.corrupt(f"tensor {name!r} row of {shape[-1]} is not whole {block_size}-blocks")
    info = GGUFTensorInfo(
        name, ggml_type, shape, data_start + offset, num_elements // block_size * block_bytes
    )
    if info.offset + info.num_bytes > len(cursor.buffer):
        raise cursor.corrupt(
            f"tensor {name!r} ends at byte {info.offset + info.num_bytes} "
            f"but the file has {len(cursor.buffer)} bytes"
        )
    return info
