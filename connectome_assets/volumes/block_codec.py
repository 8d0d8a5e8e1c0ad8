"""The DVID compressed label block (`labels.Block`): decode (compiled) and encode (for tests and
synthetic exports). Layout, byte for byte, in ../shared/design/dvid-formats.md §2.

A block is split into 8³ sub-blocks in z, y, x order (x fastest). It carries one table of uint64
labels; each sub-block has a palette of indices into the table and, when it has two or more
entries, a stream of 512 palette positions of b = bit_length(Ns-1) bits, packed MSB-first.
Everything else is little-endian.

The decoder writes the output as *runs*: 8 voxels along the output's contiguous axis (x for a
z, y, x array; z for a transposed view into an x, y, z array), each run one row of a (rows, 8)
view of the output; a sub-block is 64 runs. An x row of a sub-block's stream is b whole bytes,
so every run is computed from one integer. Most of the time goes into writing the 2 MiB of
output, so runs are stored with 32-byte vector stores, emitted by the small LLVM intrinsics
below (numba's LLVM runs no SLP vectorizer and would leave 8 scalar stores), and for b <= 3 the
voxels are chosen with vector blends instead of table lookups.
"""

from __future__ import annotations

import struct
import sys
from collections.abc import Sequence

import numba
import numpy as np
from llvmlite import ir
from numba.core import types
from numba.extending import intrinsic

HEADER_BYTES = 16
SUB = 8  # sub-block edge in voxels
SUB_VOXELS = SUB**3


class BlockFormatError(ValueError):
    """A block whose bytes do not follow the DVID layout."""


BlockBytes = bytes | bytearray | memoryview | np.ndarray  # any contiguous byte buffer; it is never copied

# Error codes returned by the compiled decoder (numba cannot raise formatted messages).
_OK, _TRUNCATED, _INDEX_PAST_TABLE, _VALUE_PAST_PALETTE, _TRAILING, _PALETTE_TOO_LARGE = 0, 1, 2, 3, 4, 5


def _is_words(array: types.Type) -> bool:
    return isinstance(array, types.Array) and array.layout == "C" and array.dtype == types.uint64


def _run_pointer(context, builder, array_type, array, offset_type, offset):  # pragma: no cover - codegen
    """Pointer to flat element `offset` of a C-contiguous uint64 array, as an LLVM <4 x i64>*."""
    data = context.make_array(array_type)(context, builder, array).data
    start = builder.gep(data, [context.cast(builder, offset, offset_type, types.intp)])
    return builder.bitcast(start, ir.VectorType(ir.IntType(64), 4).as_pointer())


def _splat(builder, value):  # pragma: no cover - codegen
    i32 = ir.IntType(32)
    one = builder.insert_element(ir.Constant(ir.VectorType(value.type, 4), None), value, ir.Constant(i32, 0))
    return builder.shuffle_vector(one, one, ir.Constant(ir.VectorType(i32, 4), [0, 0, 0, 0]))


@intrinsic
def _store_splat(typingctx, dst, at, value):
    """dst.flat[at:at+8] = value (one run of a solid sub-block)."""
    if not _is_words(dst):
        return None

    def codegen(context, builder, signature, args):  # pragma: no cover - codegen
        to = _run_pointer(context, builder, signature.args[0], args[0], signature.args[1], args[1])
        splat = _splat(builder, context.cast(builder, args[2], signature.args[2], types.uint64))
        builder.store(splat, to, align=8)
        builder.store(splat, builder.gep(to, [ir.Constant(ir.IntType(32), 1)]), align=8)
        return context.get_dummy_value()

    return types.void(dst, at, value), codegen


def _selected_runs(bits: int, across: bool):
    """An intrinsic writing runs of `bits`-wide palette positions (bits <= 3) without lookups.

    Row words hold 8 fields, field 0 in the high bits. Shifting bit j of a lane's field to the
    sign bit lets vector blends choose between palette entries, lowest bit first, down a tree of
    2**bits - 1 selects. Not `across`: runs(dst, at, word, palette) writes the run
    dst.flat[at:at+8] = palette[fields of word]. `across` (transposed output):
    runs(dst, at, step, w0, ..., w7, palette) writes 8 runs, run x at dst.flat[at + x·step]
    holding field x of the 8 row words.
    """

    def codegen(context, builder, signature, args):  # pragma: no cover - codegen
        i64, i32 = ir.IntType(64), ir.IntType(32)
        vector = ir.VectorType(i64, 4)
        entries = context.make_array(signature.args[-1])(context, builder, args[-1]).data
        choices = [_splat(builder, builder.load(builder.gep(entries, [ir.Constant(i64, k)]), align=8)) for k in range(1 << bits)]

        def store_run(offset, offset_type, halves, fields):
            """Store the run whose lane i of half h is field fields[h][i] of lane i of halves[h]."""
            to = _run_pointer(context, builder, signature.args[0], args[0], offset_type, offset)
            for half, lanes in enumerate(halves):
                level = choices
                for j in range(bits):
                    shifts = ir.Constant(vector, [63 - ((7 - x) * bits + j) for x in fields[half]])
                    on = builder.icmp_signed("<", builder.shl(lanes, shifts), ir.Constant(vector, [0] * 4))
                    level = [builder.select(on, level[2 * k + 1], level[2 * k]) for k in range(len(level) // 2)]
                builder.store(level[0], builder.gep(to, [ir.Constant(i32, half)]), align=8)

        if across:
            words = [context.cast(builder, a, t, types.int64) for a, t in zip(args[3:-1], signature.args[3:-1])]
            halves = []
            for half in range(2):
                lanes = ir.Constant(vector, None)
                for lane in range(4):
                    lanes = builder.insert_element(lanes, words[4 * half + lane], ir.Constant(i32, lane))
                halves.append(lanes)
            at = context.cast(builder, args[1], signature.args[1], types.int64)
            step = context.cast(builder, args[2], signature.args[2], types.int64)
            for x in range(8):
                store_run(builder.add(at, builder.mul(step, ir.Constant(i64, x))), types.int64, halves, [[x] * 4, [x] * 4])
        else:
            lanes = _splat(builder, context.cast(builder, args[2], signature.args[2], types.int64))
            store_run(args[1], signature.args[1], [lanes, lanes], [[0, 1, 2, 3], [4, 5, 6, 7]])
        return context.get_dummy_value()

    if across:

        @intrinsic
        def runs_across(typingctx, dst, at, step, w0, w1, w2, w3, w4, w5, w6, w7, palette):
            if not (_is_words(dst) and _is_words(palette)):
                return None
            return types.void(dst, at, step, w0, w1, w2, w3, w4, w5, w6, w7, palette), codegen

        return runs_across

    @intrinsic
    def run_along(typingctx, dst, at, word, palette):
        if not (_is_words(dst) and _is_words(palette)):
            return None
        return types.void(dst, at, word, palette), codegen

    return run_along


_run1, _run2, _run3 = _selected_runs(1, False), _selected_runs(2, False), _selected_runs(3, False)
_runs1_across, _runs2_across, _runs3_across = _selected_runs(1, True), _selected_runs(2, True), _selected_runs(3, True)

def _little_endian_load(width: int):
    """An intrinsic load(data, at): the `width`-bit unsigned integer stored little-endian at byte
    `at` of a C-contiguous uint8 array, as a uint64, in one unaligned load (little-endian hosts,
    checked at import) instead of width/8 byte loads."""

    @intrinsic
    def load(typingctx, data, at):
        if not (isinstance(data, types.Array) and data.dtype == types.uint8 and data.layout == "C"):
            return None

        def codegen(context, builder, signature, args):  # pragma: no cover - codegen
            start = context.make_array(signature.args[0])(context, builder, args[0]).data
            byte = builder.gep(start, [context.cast(builder, args[1], signature.args[1], types.intp)])
            value = builder.load(builder.bitcast(byte, ir.IntType(width).as_pointer()), align=1)
            return value if width == 64 else builder.zext(value, ir.IntType(64))

        return types.uint64(data, at), codegen

    return load


if sys.byteorder != "little":  # pragma: no cover - every supported host is little-endian
    raise ImportError("block_codec's compiled loads assume a little-endian host")
_load32, _load64 = _little_endian_load(32), _little_endian_load(64)

# Small helpers are plain functions, not inline="always": numba's IR inlining costs seconds of
# compile time, and LLVM inlines them anyway (then folds the constant bit width).


@numba.njit(nogil=True)
def _row_word(data, p, B):  # pragma: no cover - compiled
    """The B bytes of one x row (8 fields of B bits, field 0 in the high bits) as an integer."""
    at = np.uint64(p)  # unsigned indices: no negative-index wraparound code in the hot loops
    word = np.int64(0)
    for k in range(B):
        word = (word << 8) | np.int64(data[at + np.uint64(k)])
    return word


@numba.njit(nogil=True)
def _past_palette(word, B, ns):  # pragma: no cover - compiled
    """Nonzero iff some field of a row word is >= ns. With a B-bit gap above each of 4 alternate
    fields, adding 2**B - ns to each carries into the gap iff the field is >= ns."""
    even = 0
    for j in range(0, SUB, 2):
        even |= 1 << (j * B)
    fields = even * ((1 << B) - 1)
    bias = even * ((1 << B) - ns)
    return ((((word & fields) + bias) | (((word >> B) & fields) + bias)) >> B) & even


@numba.njit(inline="always")
def _selected_sub_block(data, stream, B, ns, palette, rows, r0, ra, rb, transposed, run, runs_across):  # pragma: no cover - compiled
    """Expand one sub-block of B (1..3) bits per voxel; 1 if a voxel value is past the palette.

    Run (a, b) of the sub-block is row r0 + a·ra + b·rb of `rows`, (a, b) = (z, y), or (x, y)
    when `transposed`.
    """
    seen = 0
    if transposed:
        for y in range(SUB):  # the z runs at this y take one field from each of 8 row words
            w0 = _row_word(data, stream + y * B, B)
            w1 = _row_word(data, stream + (SUB + y) * B, B)
            w2 = _row_word(data, stream + (2 * SUB + y) * B, B)
            w3 = _row_word(data, stream + (3 * SUB + y) * B, B)
            w4 = _row_word(data, stream + (4 * SUB + y) * B, B)
            w5 = _row_word(data, stream + (5 * SUB + y) * B, B)
            w6 = _row_word(data, stream + (6 * SUB + y) * B, B)
            w7 = _row_word(data, stream + (7 * SUB + y) * B, B)
            if B > 1:
                for w in (w0, w1, w2, w3, w4, w5, w6, w7):
                    seen |= _past_palette(w, B, ns)
            runs_across(rows, (r0 + y * rb) * SUB, ra * SUB, w0, w1, w2, w3, w4, w5, w6, w7, palette)
    else:
        for z in range(SUB):
            for y in range(SUB):
                word = _row_word(data, stream + (z * SUB + y) * B, B)
                if B > 1:
                    seen |= _past_palette(word, B, ns)
                run(rows, (r0 + z * ra + y * rb) * SUB, word, palette)
    return 1 if seen else 0


@numba.njit(nogil=True)
def _bits1(data, stream, ns, palette, rows, r0, ra, rb, transposed):  # pragma: no cover - compiled
    return _selected_sub_block(data, stream, 1, ns, palette, rows, r0, ra, rb, transposed, _run1, _runs1_across)


@numba.njit(nogil=True)
def _bits2(data, stream, ns, palette, rows, r0, ra, rb, transposed):  # pragma: no cover - compiled
    return _selected_sub_block(data, stream, 2, ns, palette, rows, r0, ra, rb, transposed, _run2, _runs2_across)


@numba.njit(nogil=True)
def _bits3(data, stream, ns, palette, rows, r0, ra, rb, transposed):  # pragma: no cover - compiled
    return _selected_sub_block(data, stream, 3, ns, palette, rows, r0, ra, rb, transposed, _run3, _runs3_across)


@numba.njit(nogil=True)
def _bits_any(data, stream, bits, ns, palette, rows, r0, ra, rb, transposed):  # pragma: no cover - compiled
    """Any width up to 9 bits (4 and more are rare at full resolution): each value is read from the
    16-bit window holding it and looked up."""
    largest = 0
    bitpos = 0
    last = data.size - 1  # a value ending a row ends on a byte boundary: never read past the block for its window
    for z in range(SUB):
        for y in range(SUB):
            for x in range(SUB):
                byte = stream + (bitpos >> 3)
                window = (np.int64(data[byte]) << 8) | np.int64(data[min(byte + 1, last)])
                value = (window >> (16 - (bitpos & 7) - bits)) & ((1 << bits) - 1)
                largest = max(largest, value)
                if transposed:
                    rows[r0 + x * ra + y * rb, z] = palette[value]
                else:
                    rows[r0 + z * ra + y * rb, x] = palette[value]
                bitpos += bits
    return 1 if largest >= ns else 0


@numba.njit(nogil=True)
def _locate_sub_blocks(data, n, gx, gy, gz, palette_at, stream_at):  # pragma: no cover - compiled
    """Check a (non-solid) block's layout in stream order and note where each sub-block's palette
    and value stream start (stream_at is past the end for a sub-block of 0 or 1 entries).
    Returns (code, sub-block, detail) as `_expand` does; every palette index is below n and
    every palette has at most 512 entries when the code is _OK. Values are not checked here."""
    size = data.size
    nsb = gx * gy * gz
    counts_at = HEADER_BYTES + 8 * n
    palettes_at = counts_at + 2 * nsb
    if palettes_at > size:
        return _TRUNCATED, -1, palettes_at
    total = 0
    for sb in range(nsb):
        total += np.int64(data[counts_at + 2 * sb]) | (np.int64(data[counts_at + 2 * sb + 1]) << 8)
    stream = palettes_at + 4 * total
    if stream > size:
        return _TRUNCATED, -1, stream
    cursor = palettes_at
    for sb in range(nsb):
        ns = np.int64(data[counts_at + 2 * sb]) | (np.int64(data[counts_at + 2 * sb + 1]) << 8)
        palette_at[sb] = cursor
        for k in range(ns):
            index = np.int64(_load32(data, cursor + 4 * k))
            if index >= n:
                return _INDEX_PAST_TABLE, sb, index
        cursor += 4 * ns
        if ns > 512:
            return _PALETTE_TOO_LARGE, sb, ns
        stream_at[sb] = stream
        if ns > 1:
            bits = 1
            while (1 << bits) < ns:
                bits += 1
            stream += 64 * bits
            if stream > size:
                return _TRUNCATED, sb, stream
    if stream != size:
        return _TRAILING, -1, size - stream
    return _OK, -1, 0


@numba.njit(nogil=True)
def _palette_labels(data, cursor, ns, table, mapped, palette):  # pragma: no cover - compiled
    """palette[:ns] = the labels of the ns palette entries at byte `cursor`: `table` entries when
    `mapped`, else the block's own table entries (read in place)."""
    for k in range(ns):
        index = np.int64(_load32(data, cursor + 4 * k))
        if mapped:
            palette[k] = table[index]
        else:
            palette[k] = _load64(data, HEADER_BYTES + 8 * index)


@numba.njit(cache=True, nogil=True)
def _expand(data, n, gx, gy, gz, table, mapped, rows, ra, rb, transposed):  # pragma: no cover - compiled
    """Write the block's voxels as runs: the run at voxel (z, y, 8·sx) is row z·ra + y·rb + sx of
    `rows`, or, `transposed`, the run at voxel (8·sz, y, x) is row x·ra + y·rb + sz.

    The table entries are `table` when `mapped`, else the block's own (read in place). Returns
    (code, sub-block, detail); for a value past a palette, detail is where that sub-block's
    stream starts. On an error the output is partly written.
    """
    nsb = gx * gy * gz
    # Pass 1, in stream order: check the palettes and note where each sub-block's palette and
    # stream start, so that pass 2 can visit sub-blocks in the output's memory order.
    palette_at = np.empty(nsb, dtype=np.int64)
    stream_at = np.empty(nsb, dtype=np.int64)
    code, sub_block, detail = _locate_sub_blocks(data, n, gx, gy, gz, palette_at, stream_at)
    if code != _OK:
        return code, sub_block, detail
    counts_at = HEADER_BYTES + 8 * n
    # Pass 2: consecutive x runs (sx) or z runs (sz) are adjacent in memory; keep them together.
    palette = np.empty(512, dtype=np.uint64)  # this sub-block's labels, already mapped
    outer, middle, inner = (gx, gy, gz) if transposed else (gz, gy, gx)
    for a in range(outer):
        for b in range(middle):
            for c in range(inner):
                sb = (c * gy + b) * gx + a if transposed else (a * gy + b) * gx + c
                ns = np.int64(data[counts_at + 2 * sb]) | (np.int64(data[counts_at + 2 * sb + 1]) << 8)
                _palette_labels(data, palette_at[sb], ns, table, mapped, palette)
                r0 = SUB * a * ra + SUB * b * rb + c
                if ns <= 1:  # solid (or, for 0, uninitialised = 0) sub-block: no stream bytes
                    value = palette[0] if ns == 1 else np.uint64(0)
                    for i in range(SUB):
                        for j in range(SUB):
                            _store_splat(rows, (r0 + i * ra + j * rb) * SUB, value)
                    continue
                start = stream_at[sb]
                if ns == 2:
                    bad = _bits1(data, start, ns, palette, rows, r0, ra, rb, transposed)
                elif ns <= 4:
                    bad = _bits2(data, start, ns, palette, rows, r0, ra, rb, transposed)
                elif ns <= 8:
                    bad = _bits3(data, start, ns, palette, rows, r0, ra, rb, transposed)
                else:
                    bits = 4
                    while (1 << bits) < ns:
                        bits += 1
                    bad = _bits_any(data, start, bits, ns, palette, rows, r0, ra, rb, transposed)
                if bad:
                    return _VALUE_PAST_PALETTE, sb, start
    return _OK, -1, 0


_NO_TABLE = np.empty(0, dtype=np.uint64)
_NO_TABLE.flags.writeable = False


def _read_only(array: np.ndarray) -> np.ndarray:
    """A read-only view: one numba signature whether the caller's buffer is writeable or not."""
    if array.flags.writeable:
        array = array.view()
        array.flags.writeable = False
    return array


def _as_array(data: BlockBytes) -> np.ndarray:
    try:
        return _read_only(np.frombuffer(data, dtype=np.uint8))
    except (TypeError, ValueError) as exc:
        raise BlockFormatError(f"block bytes must be one contiguous buffer ({exc})") from None


def block_header(data: BlockBytes) -> tuple[int, int, int, int]:
    """(gx, gy, gz, number of table labels)."""
    raw = _as_array(data)
    if raw.size < HEADER_BYTES:
        raise BlockFormatError(f"block of {raw.size} bytes is shorter than its 16-byte header")
    gx, gy, gz, n = struct.unpack_from("<4I", raw, 0)
    if not (0 < gx <= 128 and 0 < gy <= 128 and 0 < gz <= 128):
        raise BlockFormatError(f"block header has an impossible sub-block grid {gx}x{gy}x{gz}")
    return gx, gy, gz, n


def block_table(data: BlockBytes) -> np.ndarray:
    """The block's own label table (the supervoxel ids), in block order."""
    raw = _as_array(data)
    _, _, _, n = block_header(raw)
    if HEADER_BYTES + 8 * n > raw.size:
        raise BlockFormatError(f"block is truncated: its {n}-label table needs {HEADER_BYTES + 8 * n} bytes, it has {raw.size}")
    return np.frombuffer(raw, dtype="<u8", count=n, offset=HEADER_BYTES).astype(np.uint64)


def block_shape(data: BlockBytes) -> tuple[int, int, int]:
    """The decoded (z, y, x) shape: (8gz, 8gy, 8gx)."""
    gx, gy, gz, _ = block_header(data)
    return SUB * gz, SUB * gy, SUB * gx


def _runs(out: np.ndarray) -> tuple[np.ndarray, int, int, bool] | None:
    """`out` (z, y, x) as (rows of 8 voxels, ra, rb, transposed) for `_expand`, or None.

    Needs x or z contiguous and the other two strides positive multiples of 8 voxels, so that
    every run starts a row of the (rows, 8) view laid over `out`'s own extent.
    """
    sz, sy, sx = out.strides
    if sx == 8 and sz > 0 and sy > 0 and sz % 64 == 0 and sy % 64 == 0:
        ra, rb, transposed = sz // 64, sy // 64, False
    elif sz == 8 and sx > 0 and sy > 0 and sx % 64 == 0 and sy % 64 == 0:
        ra, rb, transposed = sx // 64, sy // 64, True
    else:
        return None
    if out.flags.c_contiguous:
        return out.reshape(-1, SUB), ra, rb, transposed
    if out.flags.f_contiguous:  # e.g. the transpose of a whole x, y, z chunk
        return out.T.reshape(-1, SUB), ra, rb, transposed
    extent = 1 + sum((length - 1) * stride // 8 for length, stride in zip(out.shape, out.strides))
    return np.lib.stride_tricks.as_strided(out, shape=(extent // SUB, SUB), strides=(64, 8)), ra, rb, transposed


def _first_past_palette(raw: np.ndarray, sub_block: int, n: int, stream: int) -> int:
    """The first voxel value of a sub-block that is past its palette (for the error message)."""
    nsb_at = HEADER_BYTES + 8 * n + 2 * sub_block
    ns = int(raw[nsb_at]) | int(raw[nsb_at + 1]) << 8
    bits = _bits_for(ns)
    positions = np.unpackbits(raw[stream : stream + 64 * bits]).reshape(SUB_VOXELS, bits) @ (1 << np.arange(bits - 1, -1, -1))
    return int(positions[positions >= ns][0])


def checked_table(mapped_table: np.ndarray | None, n: int) -> np.ndarray | None:
    """The label mapping as a read-only contiguous uint64 array, checked against the block's n labels."""
    if mapped_table is None:
        return None
    if len(mapped_table) != n:
        raise BlockFormatError(f"label mapping has {len(mapped_table)} entries for a {n}-label block table")
    return _read_only(np.ascontiguousarray(mapped_table, dtype=np.uint64))


def solid_value(raw: np.ndarray, n: int, mapped_table: np.ndarray | None) -> int:
    """Every voxel's label in a block of n <= 1 labels (0 when n = 0), its length checked."""
    if raw.size != HEADER_BYTES + 8 * n:
        if raw.size < HEADER_BYTES + 8 * n:
            raise BlockFormatError(f"block is truncated: its {n}-label table needs {HEADER_BYTES + 8 * n} bytes, it has {raw.size}")
        raise BlockFormatError(f"solid block has {raw.size - HEADER_BYTES - 8 * n} unexpected trailing bytes")
    if n == 0:
        return 0
    return int(mapped_table[0] if mapped_table is not None else raw[HEADER_BYTES : HEADER_BYTES + 8].view("<u8")[0])


def raise_block_error(raw: np.ndarray, n: int, code: int, sub_block: int, detail: int) -> None:
    """The one-sentence BlockFormatError for an error code of the compiled passes (`_OK`: nothing)."""
    if code == _OK:
        return
    if code == _TRUNCATED:
        raise BlockFormatError(f"block is truncated: {detail} bytes needed, {raw.size} present")
    if code == _INDEX_PAST_TABLE:
        raise BlockFormatError(f"sub-block {sub_block} names label index {detail}, past the {n}-label table")
    if code == _VALUE_PAST_PALETTE:
        raise BlockFormatError(f"sub-block {sub_block} has a voxel value {_first_past_palette(raw, sub_block, n, detail)} past its palette")
    if code == _PALETTE_TOO_LARGE:
        raise BlockFormatError(f"sub-block {sub_block} has a {detail}-entry palette, more than its 512 voxels can use")
    raise BlockFormatError(f"block has {detail} trailing bytes after its last sub-block")


def _decode(raw: np.ndarray, header: tuple[int, int, int, int], mapped_table: np.ndarray | None, out: np.ndarray) -> bool:
    """Decode into `out` (z, y, x) if its layout allows runs; False (nothing written) if not."""
    gx, gy, gz, n = header
    mapped_table = checked_table(mapped_table, n)
    if n <= 1:
        out[...] = solid_value(raw, n, mapped_table)
        return True
    layout = _runs(out)
    if layout is None:
        return False
    rows, ra, rb, transposed = layout
    table = _NO_TABLE if mapped_table is None else mapped_table
    code, sub_block, detail = _expand(raw, n, gx, gy, gz, table, mapped_table is not None, rows, ra, rb, transposed)
    raise_block_error(raw, n, code, sub_block, detail)
    return True


def _empty_aligned(shape: tuple[int, int, int]) -> np.ndarray:
    """An uninitialised C-order uint64 array starting on a 64-byte boundary, so that every run is
    one cache line (numpy aligns large arrays to 16 bytes only)."""
    count = shape[0] * shape[1] * shape[2]
    buffer = np.empty(count + 7, dtype=np.uint64)
    skip = (-buffer.__array_interface__["data"][0] % 64) // 8
    return buffer[skip : skip + count].reshape(shape)


def decode_block(data: BlockBytes, mapped_table: np.ndarray | None = None) -> np.ndarray:
    """Voxels as a C-order (z, y, x) uint64 array of shape (8gz, 8gy, 8gx).

    `mapped_table` replaces the block's table entry for entry (e.g. the export's agglomerated
    `labels` column); it must have the table's length.
    """
    raw = _as_array(data)
    header = block_header(raw)
    gx, gy, gz, _ = header
    out = _empty_aligned((SUB * gz, SUB * gy, SUB * gx))
    _decode(raw, header, mapped_table, out)
    return out


def decode_block_into(data: BlockBytes, mapped_table: np.ndarray | None, out: np.ndarray) -> np.ndarray:
    """Decode into `out`, a writeable uint64 (8gz, 8gy, 8gx) array indexed (z, y, x); returns `out`.

    `out` may be a view, e.g. `shard[x0:x0+64, y0:y0+64, z0:z0+64].transpose(2, 1, 0)` of an
    x, y, z C-order buffer: views whose x or z axis is contiguous (other strides multiples of
    8 voxels) are written in place, others through a temporary. On a BlockFormatError `out` may
    be partly written.
    """
    raw = _as_array(data)
    header = block_header(raw)
    gx, gy, gz, _ = header
    shape = (SUB * gz, SUB * gy, SUB * gx)
    if not isinstance(out, np.ndarray) or out.shape != shape or out.dtype != np.uint64 or not out.flags.writeable:
        got = f"{out.dtype} array of shape {out.shape}" if isinstance(out, np.ndarray) else type(out).__name__
        raise ValueError(f"decode_block_into needs a writeable uint64 array of shape {shape}, got {got}")
    if not _decode(raw, header, mapped_table, out):
        out[...] = decode_block(raw, mapped_table)
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
