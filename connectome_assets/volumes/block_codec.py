"""The DVID compressed label block (`labels.Block`): decode (compiled) and encode (for tests and
synthetic exports). Layout, byte for byte, in ../shared/design/dvid-formats.md §2.

A block is split into 8³ sub-blocks in z, y, x order (x fastest). It carries one table of uint64
labels; each sub-block has a palette of indices into the table and, when it has two or more
entries, a stream of 512 palette positions of b = bit_length(Ns-1) bits, packed MSB-first.
Everything else is little-endian.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

import numba
import numpy as np

HEADER_BYTES = 16
SUB = 8  # sub-block edge in voxels
SUB_VOXELS = SUB**3


class BlockFormatError(ValueError):
    """A block whose bytes do not follow the DVID layout."""


# Error codes returned by the compiled decoder (numba cannot raise formatted messages).
_OK, _TRUNCATED, _INDEX_PAST_TABLE, _VALUE_PAST_PALETTE, _TRAILING = 0, 1, 2, 3, 4


@numba.njit(cache=True, nogil=True)
def _decode_sub_blocks(data, gx, gy, gz, table, out):  # pragma: no cover - compiled
    """Fill `out` (8gz, 8gy, 8gx); returns (code, sub-block, detail)."""
    size = len(data)
    n = len(table)
    nsb = gx * gy * gz
    counts_at = HEADER_BYTES + 8 * n
    palettes_at = counts_at + 2 * nsb
    if palettes_at > size:
        return _TRUNCATED, -1, palettes_at
    total = 0
    for i in range(nsb):
        total += data[counts_at + 2 * i] | (np.int64(data[counts_at + 2 * i + 1]) << 8)
    stream = palettes_at + 4 * total
    if stream > size:
        return _TRUNCATED, -1, stream
    palette_cursor = palettes_at
    palette = np.empty(512, dtype=np.uint64)
    for sb in range(nsb):
        ns = data[counts_at + 2 * sb] | (np.int64(data[counts_at + 2 * sb + 1]) << 8)
        sx = sb % gx
        sy = (sb // gx) % gy
        sz = sb // (gx * gy)
        for k in range(ns):
            p = palette_cursor + 4 * k
            index = (
                np.int64(data[p]) | (np.int64(data[p + 1]) << 8) | (np.int64(data[p + 2]) << 16) | (np.int64(data[p + 3]) << 24)
            )
            if index >= n:
                return _INDEX_PAST_TABLE, sb, index
            if k < 512:
                palette[k] = table[index]
        palette_cursor += 4 * ns
        z0, y0, x0 = sz * SUB, sy * SUB, sx * SUB
        if ns <= 1:
            value = palette[0] if ns == 1 else np.uint64(0)
            for z in range(SUB):
                for y in range(SUB):
                    for x in range(SUB):
                        out[z0 + z, y0 + y, x0 + x] = value
            continue
        if ns > 512:
            return _VALUE_PAST_PALETTE, sb, ns
        bits = 0
        while (1 << bits) < ns:
            bits += 1
        if stream + 64 * bits > size:
            return _TRUNCATED, sb, stream + 64 * bits
        mask = (1 << bits) - 1
        last = size - 1
        bitpos = 0
        for z in range(SUB):
            for y in range(SUB):
                for x in range(SUB):
                    byte = stream + (bitpos >> 3)
                    window = (np.int64(data[byte]) << 8) | np.int64(data[min(byte + 1, last)])
                    position = (window >> (16 - (bitpos & 7) - bits)) & mask
                    if position >= ns:
                        return _VALUE_PAST_PALETTE, sb, position
                    out[z0 + z, y0 + y, x0 + x] = palette[position]
                    bitpos += bits
        stream += 64 * bits
    if stream != size:
        return _TRAILING, -1, size - stream
    return _OK, -1, 0


def block_header(data: bytes) -> tuple[int, int, int, int]:
    """(gx, gy, gz, number of table labels)."""
    if len(data) < HEADER_BYTES:
        raise BlockFormatError(f"block of {len(data)} bytes is shorter than its 16-byte header")
    gx, gy, gz, n = struct.unpack_from("<4I", data, 0)
    if not (0 < gx <= 128 and 0 < gy <= 128 and 0 < gz <= 128):
        raise BlockFormatError(f"block header has an impossible sub-block grid {gx}x{gy}x{gz}")
    return gx, gy, gz, n


def block_table(data: bytes) -> np.ndarray:
    """The block's own label table (the supervoxel ids), in block order."""
    _, _, _, n = block_header(data)
    if HEADER_BYTES + 8 * n > len(data):
        raise BlockFormatError(f"block is truncated: its {n}-label table needs {HEADER_BYTES + 8 * n} bytes, it has {len(data)}")
    return np.frombuffer(data, dtype="<u8", count=n, offset=HEADER_BYTES).astype(np.uint64)


def decode_block(data: bytes, mapped_table: np.ndarray | None = None) -> np.ndarray:
    """Voxels as a C-order (z, y, x) uint64 array of shape (8gz, 8gy, 8gx).

    `mapped_table` replaces the block's table entry for entry (e.g. the export's agglomerated
    `labels` column); it must have the table's length.
    """
    gx, gy, gz, n = block_header(data)
    table = block_table(data)
    if mapped_table is not None:
        if len(mapped_table) != n:
            raise BlockFormatError(f"label mapping has {len(mapped_table)} entries for a {n}-label block table")
        table = np.ascontiguousarray(mapped_table, dtype=np.uint64)
    shape = (SUB * gz, SUB * gy, SUB * gx)
    if n <= 1:
        if len(data) != HEADER_BYTES + 8 * n:
            raise BlockFormatError(f"solid block has {len(data) - HEADER_BYTES - 8 * n} unexpected trailing bytes")
        return np.full(shape, table[0] if n else 0, dtype=np.uint64)
    out = np.empty(shape, dtype=np.uint64)
    code, sub_block, detail = _decode_sub_blocks(np.frombuffer(data, dtype=np.uint8), gx, gy, gz, table, out)
    if code == _TRUNCATED:
        raise BlockFormatError(f"block is truncated: {detail} bytes needed, {len(data)} present")
    if code == _INDEX_PAST_TABLE:
        raise BlockFormatError(f"sub-block {sub_block} names label index {detail}, past the {n}-label table")
    if code == _VALUE_PAST_PALETTE:
        raise BlockFormatError(f"sub-block {sub_block} has a voxel value {detail} past its palette")
    if code == _TRAILING:
        raise BlockFormatError(f"block has {detail} trailing bytes after its last sub-block")
    return out


def _bits_for(count: int) -> int:
    return 0 if count < 2 else int(count - 1).bit_length()


def encode_block(volume: np.ndarray, table: Sequence[int] | np.ndarray | None = None) -> bytes:
    """DVID block bytes for a (z, y, x) uint64 volume whose edges are multiples of 8 (>= 16).

    Palettes follow first appearance in each sub-block's z, y, x scan (as DVID's encoder does).
    The table is `table` when given (e.g. an existing block's order, which then reproduces its
    bytes exactly) or else the first appearance across palettes in sub-block order.
    """
    volume = np.asarray(volume, dtype=np.uint64)
    if volume.ndim != 3 or any(s % SUB or s < 16 for s in volume.shape):
        raise BlockFormatError(f"cannot encode a volume of shape {volume.shape}: edges must be multiples of 8, at least 16")
    nz, ny, nx = volume.shape
    gz, gy, gx = nz // SUB, ny // SUB, nx // SUB
    sub_blocks = volume.reshape(gz, SUB, gy, SUB, gx, SUB).transpose(0, 2, 4, 1, 3, 5).reshape(gz * gy * gx, SUB_VOXELS)
    palettes = []
    for values in sub_blocks:
        unique, first = np.unique(values, return_index=True)
        palettes.append(unique[np.argsort(first)])
    if table is None:
        order = np.concatenate(palettes)
        unique, first = np.unique(order, return_index=True)
        table_array = unique[np.argsort(first)]
    else:
        table_array = np.asarray(table, dtype=np.uint64)
    position = {int(label): i for i, label in reversed(list(enumerate(table_array.tolist())))}
    missing = {int(v) for p in palettes for v in p.tolist()} - position.keys()
    if missing:
        raise BlockFormatError(f"table lacks {len(missing)} label(s) of the volume, e.g. {min(missing)}")
    header = struct.pack("<4I", gx, gy, gz, len(table_array)) + table_array.astype("<u8").tobytes()
    if len(table_array) == 1:
        return header
    counts = np.array([len(p) for p in palettes], dtype="<u2")
    indices = np.array([position[int(v)] for p in palettes for v in p.tolist()], dtype="<u4")
    streams = []
    for values, palette in zip(sub_blocks, palettes):
        bits = _bits_for(len(palette))
        if bits == 0:
            continue
        order = np.argsort(palette)
        positions = order[np.searchsorted(palette, values, sorter=order)].astype(np.uint16)
        bit_matrix = (positions[:, None] >> np.arange(bits - 1, -1, -1, dtype=np.uint16)) & 1
        streams.append(np.packbits(bit_matrix.astype(np.uint8).ravel()).tobytes())
    return header + counts.tobytes() + indices.tobytes() + b"".join(streams)
