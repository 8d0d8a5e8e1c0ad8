"""Neuroglancer precomputed sharding (`neuroglancer_uint64_sharded_v1`) for chunked volumes.

Chunk ids are compressed Morton codes of the chunk grid position; `preshift_bits`,
`minishard_bits` and `shard_bits` split a (possibly hashed) chunk id into minishard and shard.
Formats and test vectors: dvid-formats.md §1.9 and neuroglancer's `sharded.md`.
"""

from __future__ import annotations

import gzip
import math
import struct
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

_MASK32 = 0xFFFFFFFF
_MASK64 = 0xFFFFFFFFFFFFFFFF


class ShardFileError(ValueError):
    """A `.shard` file that cannot be read as its sharding spec says; the message names the file."""


@dataclass(frozen=True)
class ShardingSpec:
    preshift_bits: int
    minishard_bits: int
    shard_bits: int
    hash: str = "identity"
    minishard_index_encoding: str = "raw"
    data_encoding: str = "raw"

    @classmethod
    def from_info(cls, sharding: Mapping[str, Any]) -> ShardingSpec:
        if sharding.get("@type") != "neuroglancer_uint64_sharded_v1":
            raise ValueError(f"unsupported sharding type {sharding.get('@type')!r}")
        if sharding.get("hash", "identity") not in ("identity", "murmurhash3_x86_128"):
            raise ValueError(f"unsupported sharding hash {sharding.get('hash')!r}")
        return cls(
            preshift_bits=int(sharding["preshift_bits"]),
            minishard_bits=int(sharding["minishard_bits"]),
            shard_bits=int(sharding["shard_bits"]),
            hash=sharding.get("hash", "identity"),
            minishard_index_encoding=sharding.get("minishard_index_encoding", "raw"),
            data_encoding=sharding.get("data_encoding", "raw"),
        )

    def to_info(self) -> dict[str, Any]:
        """The spec as an info's `sharding` member (what tensorstore's sharded drivers take)."""
        return {
            "@type": "neuroglancer_uint64_sharded_v1",
            "preshift_bits": self.preshift_bits,
            "minishard_bits": self.minishard_bits,
            "shard_bits": self.shard_bits,
            "hash": self.hash,
            "minishard_index_encoding": self.minishard_index_encoding,
            "data_encoding": self.data_encoding,
        }


def chunk_grid(size: Sequence[int], chunk_size: Sequence[int]) -> tuple[int, int, int]:
    """Chunks per dimension (x, y, z)."""
    return tuple(math.ceil(s / c) for s, c in zip(size, chunk_size))  # type: ignore[return-value]


def grid_bits(grid: Sequence[int]) -> tuple[int, int, int]:
    """Bits of the compressed Morton code each dimension contributes."""
    return tuple(max(g - 1, 0).bit_length() for g in grid)  # type: ignore[return-value]


def compressed_morton_code(chunk: Sequence[int], bits: Sequence[int]) -> int:
    """Interleave x, y, z bits from the lowest up, skipping dimensions whose bits have run out."""
    code = 0
    out = 0
    for i in range(max(bits)):
        for d in range(3):
            if i < bits[d]:
                code |= ((int(chunk[d]) >> i) & 1) << out
                out += 1
    return code


def compressed_morton_codes(chunks: np.ndarray, bits: Sequence[int]) -> np.ndarray:
    """`compressed_morton_code` for an (n, 3) array of chunk positions."""
    chunks = np.asarray(chunks, dtype=np.uint64)
    codes = np.zeros(len(chunks), dtype=np.uint64)
    out = 0
    for i in range(max(bits)):
        for d in range(3):
            if i < bits[d]:
                codes |= ((chunks[:, d] >> np.uint64(i)) & np.uint64(1)) << np.uint64(out)
                out += 1
    return codes


def _fmix32(h: int) -> int:
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & _MASK32
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & _MASK32
    h ^= h >> 16
    return h


def _rotl32(x: int, r: int) -> int:
    return ((x << r) | (x >> (32 - r))) & _MASK32


def murmurhash3_x86_128_low64(value: int) -> int:
    """Low 64 bits (h2 << 32 | h1) of MurmurHash3_x86_128, seed 0, of the 8-byte little-endian value."""
    # An 8-byte key fills only the k1/k2 lanes, so c4 (the k4 constant) never applies.
    c1, c2, c3 = 0x239B961B, 0xAB0E9789, 0x38B34AE5
    k1, k2 = struct.unpack("<II", struct.pack("<Q", value & _MASK64))
    h1 = h2 = h3 = h4 = 0
    # 8 bytes: no full 16-byte block, only the tail (k2 then k1 in MurmurHash's tail order).
    k2 = (k2 * c2) & _MASK32
    k2 = _rotl32(k2, 16)
    k2 = (k2 * c3) & _MASK32
    h2 ^= k2
    k1 = (k1 * c1) & _MASK32
    k1 = _rotl32(k1, 15)
    k1 = (k1 * c2) & _MASK32
    h1 ^= k1
    length = 8
    h1 ^= length
    h2 ^= length
    h3 ^= length
    h4 ^= length
    h1 = (h1 + h2 + h3 + h4) & _MASK32
    h2 = (h2 + h1) & _MASK32
    h3 = (h3 + h1) & _MASK32
    h4 = (h4 + h1) & _MASK32
    h1, h2, h3, h4 = _fmix32(h1), _fmix32(h2), _fmix32(h3), _fmix32(h4)
    h1 = (h1 + h2 + h3 + h4) & _MASK32
    h2 = (h2 + h1) & _MASK32
    return (h2 << 32) | h1


def shard_and_minishard(chunk_id: int, spec: ShardingSpec) -> tuple[int, int]:
    hashed = chunk_id >> spec.preshift_bits if spec.preshift_bits < 64 else 0
    if spec.hash == "murmurhash3_x86_128":
        hashed = murmurhash3_x86_128_low64(hashed)
    minishard = hashed & ((1 << spec.minishard_bits) - 1)
    shard = (hashed >> spec.minishard_bits) & ((1 << spec.shard_bits) - 1)
    return shard, minishard


def shard_file_name(shard: int, shard_bits: int) -> str:
    """Lowercase hex zero-padded to ceil(shard_bits / 4) digits: `0.shard` when shard_bits = 0."""
    return f"{shard:0{math.ceil(shard_bits / 4)}x}.shard"


def _bit_walk(bits: Sequence[int], steps: int, start: Sequence[int] = (0, 0, 0)) -> tuple[list[int], list[int]]:
    """Walk the Morton bit order: the dimension of each of `steps` bits, and the bits given per dimension."""
    used = list(start)
    dims: list[int] = []
    d = 0
    for _ in range(steps):
        while used[d] >= bits[d]:
            d = (d + 1) % 3
        dims.append(d)
        used[d] += 1
        d = (d + 1) % 3
    return dims, used


def shard_shape(grid: Sequence[int], spec: ShardingSpec) -> tuple[int, int, int]:
    """Chunks per shard in x, y, z (identity hash: shards are rectangular regions)."""
    bits = grid_bits(grid)
    _, used = _bit_walk(bits, min(spec.preshift_bits + spec.minishard_bits, sum(bits)))
    return tuple(min(g, 1 << u) for g, u in zip(grid, used))  # type: ignore[return-value]


def shard_origin(shard: int, grid: Sequence[int], spec: ShardingSpec) -> tuple[int, int, int]:
    """The first chunk (x, y, z) of a shard under the identity hash."""
    if spec.hash != "identity":
        raise ValueError("shards are regions of the grid only under the identity hash")
    bits = grid_bits(grid)
    inner = min(spec.preshift_bits + spec.minishard_bits, sum(bits))
    _, used = _bit_walk(bits, inner)
    dims, _ = _bit_walk(bits, min(spec.shard_bits, sum(bits) - inner), used)
    origin = [0, 0, 0]
    for i, d in enumerate(dims):
        origin[d] |= ((shard >> i) & 1) << used[d]
        used[d] += 1
    return origin[0], origin[1], origin[2]


def shard_chunk_ids(data: bytes | Callable[[int, int], bytes], spec: ShardingSpec) -> dict[int, tuple[int, int]]:
    """The chunks a `.shard` file holds: chunk id -> (byte offset, size) of its (encoded) data.

    `data` is the file's bytes, or a function reading the byte range [start, end) of it, so only
    the indices are fetched from a large remote shard. Layout (neuroglancer `sharded.md`): a shard
    index of 2**minishard_bits (start, end) uint64 pairs locating each minishard index relative to
    the end of the shard index; each minishard index, decoded per `minishard_index_encoding`, is a
    [3, n] uint64 array of delta-coded chunk ids, delta-coded data offsets (from the end of the
    previous chunk) and sizes.
    """
    read = data if callable(data) else (lambda start, end: data[start:end])
    header = 16 << spec.minishard_bits
    head = read(0, header)
    if len(head) < header:
        raise ValueError(f"a shard of {len(head)} bytes is shorter than its {header}-byte index")
    ranges = np.frombuffer(head, dtype="<u8").reshape(-1, 2)
    chunks: dict[int, tuple[int, int]] = {}
    for start, end in ranges.tolist():
        if start == end:
            continue
        raw = read(header + start, header + end)
        if spec.minishard_index_encoding == "gzip":
            raw = gzip.decompress(raw)
        index = np.frombuffer(raw, dtype="<u8").reshape(3, -1)
        ids = np.cumsum(index[0])
        offsets = header + np.cumsum(index[1] + np.concatenate([np.zeros(1, np.uint64), index[2][:-1]]))  # uint64 throughout (a Python [0] would make it float64)
        for chunk_id, offset, size in zip(ids.tolist(), offsets.tolist(), index[2].tolist()):
            chunks[chunk_id] = (offset, size)
    return chunks


def chunk_data(stored: bytes | memoryview, spec: ShardingSpec) -> bytes | memoryview:
    """A chunk's encoded bytes from what the shard stores: the spec's `data_encoding` (gzip or raw)
    removed. Raw data is returned as it was given (no copy)."""
    return gzip.decompress(stored) if spec.data_encoding == "gzip" else stored


def shard_chunk_data(data: bytes, spec: ShardingSpec) -> dict[int, bytes]:
    """Every chunk of a `.shard` file: chunk id -> its data, with the spec's `data_encoding` (gzip or
    raw) removed, so that two shards compare chunk for chunk whatever their layout."""
    return {chunk_id: bytes(chunk_data(data[offset : offset + size], spec)) for chunk_id, (offset, size) in shard_chunk_ids(data, spec).items()}


def morton_decode(codes: np.ndarray, bits: Sequence[int]) -> np.ndarray:
    """Chunk coordinates (n, 3) of compressed Morton codes: the inverse of `compressed_morton_codes`."""
    codes = np.asarray(codes, dtype=np.uint64)
    out = np.zeros((len(codes), 3), dtype=np.int64)
    position = 0
    for level in range(max(bits, default=0)):
        for d in range(3):
            if level < bits[d]:
                out[:, d] |= ((codes >> np.uint64(position)) & np.uint64(1)).astype(np.int64) << level
                position += 1
    return out


def shards_of_codes(codes: np.ndarray, spec: ShardingSpec) -> np.ndarray:
    """`shard_and_minishard(...)[0]` for many chunk ids at once (vectorised for the identity hash)."""
    codes = np.asarray(codes, dtype=np.uint64)
    if spec.hash != "identity":
        return np.array([shard_and_minishard(int(code), spec)[0] for code in codes.tolist()], dtype=np.int64)
    hashed = codes >> np.uint64(spec.preshift_bits)
    return ((hashed >> np.uint64(spec.minishard_bits)) & np.uint64((1 << spec.shard_bits) - 1)).astype(np.int64)
