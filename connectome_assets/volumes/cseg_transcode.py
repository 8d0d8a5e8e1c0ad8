"""DVID label block -> neuroglancer compressed_segmentation chunk, without uint64 voxels.

A DVID block (dvid-formats.md §2) and a compressed_segmentation chunk with 8³ blocks (neuroglancer's
`compressed_segmentation/README.md`) cut a 64³ chunk the same way: DVID sub-block i is cseg block
i, both in z, y, x order with x fastest, and inside both the 512 voxels run z, y, x with x fastest.
So each sub-block becomes its cseg block on its own:

- its palette, mapped through the block's label table (or the agglomerated `labels` column), gives
  the block's labels; the cseg table is the sorted set of the labels its voxels actually use
  (palette entries no voxel uses are left out, equal labels merge);
- its stream of palette positions (b = bit_length(Ns-1) bits, MSB-first) is rewritten as indices
  into that table at 0, 1, 2, 4, 8 or 16 bits, LSB-first in little-endian uint32 words;
- a table equal to one an earlier block of the chunk wrote is not written again: the block points
  at the earlier copy (the encoders of neuroglancer, tensorstore and the `compressed-segmentation`
  package all keep such a cache, keyed by the whole sorted table).

The chunk is one channel: a uint32 word 1 (where the channel starts), then the channel: one
(table offset | bits << 24, values offset) header per block, then per block its values and, if
new, its table (offsets in uint32 words from the channel's start). A chunk at the volume's upper
edge is stored clipped (tensorstore's `neuroglancer_precomputed` encodes the chunk's intersection
with the volume): only the blocks that reach into `extent`, and in a block cut by the edge only
the voxels inside count for its table; the positions outside keep index 0 (their value words are
still sized for a whole 8³ block). The result is byte for byte what tensorstore stores for the
chunk (and what the `compressed-segmentation` package encodes from the clipped voxels).
"""

from __future__ import annotations

import numba
import numpy as np

from connectome_assets.volumes.block_codec import (
    _NO_TABLE,
    _OK,
    _VALUE_PAST_PALETTE,
    HEADER_BYTES,
    SUB,
    SUB_VOXELS,
    BlockBytes,
    BlockFormatError,
    _as_array,
    _load64,
    _locate_sub_blocks,
    _palette_labels,
    _row_word,
    block_header,
    checked_table,
    decode_block,
    raise_block_error,
    solid_value,
)

CHUNK_EXTENT = (64, 64, 64)
_NO_WORDS = np.empty(0, dtype=np.uint32)


@numba.njit(nogil=True)
def _cseg_bits(labels):  # pragma: no cover - compiled
    """Bits per voxel of a cseg block with `labels` distinct labels: 0 for one, else the smallest
    of 1, 2, 4, 8, 16 (32) that can index them."""
    if labels <= 1:
        return 0
    bits = 1
    while (1 << bits) < labels:
        bits *= 2
    return bits


@numba.njit(nogil=True)
def _dvid_bits(ns):  # pragma: no cover - compiled
    bits = 0
    while (1 << bits) < ns:
        bits += 1
    return bits


@numba.njit(nogil=True)
def _position(data, stream, bits, voxel):  # pragma: no cover - compiled
    """Palette position of voxel `voxel` of a sub-block stream (MSB-first, bits <= 9): read from
    the 16-bit window holding it (a value ending the stream ends on a byte boundary, so the
    window never reads past the block)."""
    bit = voxel * bits
    byte = stream + (bit >> 3)
    last = data.size - 1
    window = (np.int64(data[byte]) << 8) | np.int64(data[min(byte + 1, last)])
    return (window >> (16 - (bit & 7) - bits)) & ((1 << bits) - 1)


@numba.njit(nogil=True)
def _scan(data, stream, bits, ax, ay, az, used):  # pragma: no cover - compiled
    """Mark in `used` the palette positions of the voxels inside (ax, ay, az); return the largest
    position of all 512 voxels (inside or not: a value past the palette is an error anywhere)."""
    largest = 0
    for z in range(SUB):
        for y in range(SUB):
            for x in range(SUB):
                value = _position(data, stream, bits, (z * SUB + y) * SUB + x)
                largest = max(largest, value)
                if x < ax and y < ay and z < az:
                    used[value] = 1
    return largest


@numba.njit(nogil=True)
def _sorted_labels(labels, used, ns, out):  # pragma: no cover - compiled
    """The distinct labels[p] of the used positions p < ns, sorted, into out; returns how many."""
    m = 0
    for p in range(ns):
        if not used[p]:
            continue
        label = labels[p]
        i = m
        while i > 0 and out[i - 1] > label:
            i -= 1
        if i > 0 and out[i - 1] == label:
            continue
        for j in range(m, i, -1):
            out[j] = out[j - 1]
        out[i] = label
        m += 1
    return m


@numba.njit(nogil=True)
def _rank(label, table, m):  # pragma: no cover - compiled
    low, high = 0, m
    while low < high:
        middle = (low + high) >> 1
        if table[middle] < label:
            low = middle + 1
        else:
            high = middle
    return low


@numba.njit(nogil=True)
def _table_hash(table, m):  # pragma: no cover - compiled
    h = np.uint64(m) * np.uint64(0x9E3779B97F4A7C15)
    for i in range(m):
        h = (h ^ table[i]) * np.uint64(0xFF51AFD7ED558CCD)
        h ^= h >> np.uint64(29)
    return h


@numba.njit(nogil=True)
def _same_table(out, at, table, m):  # pragma: no cover - compiled
    """Whether the table written at channel word `at` of `out` (channel at word 1) is table[:m]."""
    for i in range(m):
        low = np.uint64(out[1 + at + 2 * i])
        high = np.uint64(out[2 + at + 2 * i])
        if (low | (high << np.uint64(32))) != table[i]:
            return False
    return True


_LOW_NIBBLES = np.uint64(0x0F0F0F0F0F0F0F0F)
_LOW_PAIRS = np.uint64(0x3333333333333333)
_LOW_BITS = np.uint64(0x5555555555555555)
_LOW_WORD = np.uint64(0xFFFFFFFF)


@numba.njit(nogil=True)
def _mirror_fields(word, bits):  # pragma: no cover - compiled
    """Reverse the order of the `bits`-wide (1 or 2) fields inside each byte: DVID's first voxel is
    a byte's high field, cseg's its low one."""
    word = ((word & _LOW_NIBBLES) << np.uint64(4)) | ((word >> np.uint64(4)) & _LOW_NIBBLES)
    word = ((word & _LOW_PAIRS) << np.uint64(2)) | ((word >> np.uint64(2)) & _LOW_PAIRS)
    if bits == 1:
        word = ((word & _LOW_BITS) << np.uint64(1)) | ((word >> np.uint64(1)) & _LOW_BITS)
    return word


@numba.njit(nogil=True)
def _store_word(out, at, word):  # pragma: no cover - compiled
    out[at] = np.uint32(word & _LOW_WORD)
    out[at + 1] = np.uint32(word >> np.uint64(32))


@numba.njit(nogil=True)
def _one_bit(data, stream, flip, out, base):  # pragma: no cover - compiled
    """A 1-bit sub-block of two distinct labels: each byte's bits mirrored, and inverted when the
    palette's first label is the larger (`flip` all ones). Returns the positions used (bits 0, 1)."""
    ones = np.uint64(0)
    zeros = np.uint64(0)
    for i in range(8):
        word = _load64(data, stream + 8 * i)
        ones |= word
        zeros |= ~word
        _store_word(out, base + 2 * i, _mirror_fields(word, 1) ^ flip)
    return (1 if zeros else 0) | (2 if ones else 0)


@numba.njit(nogil=True)
def _lanes(rank, bit):  # pragma: no cover - compiled
    """Every field's low bit when `rank` has `bit`, else nothing."""
    return _LOW_BITS if rank & bit else np.uint64(0)


@numba.njit(nogil=True)
def _two_bits(data, stream, ranks, out, base):  # pragma: no cover - compiled
    """A 2-bit sub-block whose palette has 3 or 4 distinct labels (cseg: 2 bits): fields mirrored
    inside each byte, then each field replaced by its label's rank with bit masks, 32 voxels at a
    time. Returns the positions used (bits 0-3)."""
    low0, low1, low2, low3 = _lanes(ranks[0], 1), _lanes(ranks[1], 1), _lanes(ranks[2], 1), _lanes(ranks[3], 1)
    high0, high1, high2, high3 = _lanes(ranks[0], 2), _lanes(ranks[1], 2), _lanes(ranks[2], 2), _lanes(ranks[3], 2)
    seen0 = seen1 = seen2 = seen3 = np.uint64(0)
    for i in range(16):
        word = _mirror_fields(_load64(data, stream + 8 * i), 2)
        low = word & _LOW_BITS
        high = (word >> np.uint64(1)) & _LOW_BITS
        is0 = _LOW_BITS & ~(low | high)
        is1 = low & ~high
        is2 = high & ~low
        is3 = low & high
        seen0 |= is0
        seen1 |= is1
        seen2 |= is2
        seen3 |= is3
        low_out = (is0 & low0) | (is1 & low1) | (is2 & low2) | (is3 & low3)
        high_out = (is0 & high0) | (is1 & high1) | (is2 & high2) | (is3 & high3)
        _store_word(out, base + 2 * i, low_out | (high_out << np.uint64(1)))
    return (1 if seen0 else 0) | (2 if seen1 else 0) | (4 if seen2 else 0) | (8 if seen3 else 0)


@numba.njit(nogil=True)
def _rows(data, stream, dvid_bits, ranks, bits, pairs, out, base):  # pragma: no cover - compiled
    """A whole sub-block of up to 6 bits, row by row (8 voxels of one row are dvid_bits bytes and
    8·bits output bits); returns the positions used as a bit mask. For 3 bits (5-8 labels), pairs
    of voxels are looked up in a 64-entry table of their packed ranks (low 16 bits) and the
    positions they use (above), built in `pairs`."""
    used = 0
    field = (1 << dvid_bits) - 1
    if dvid_bits == 3:
        for pair in range(64):
            first, second = pair >> 3, pair & 7
            pairs[pair] = ranks[first] | (ranks[second] << bits) | (((1 << first) | (1 << second)) << 16)
    for row in range(SUB * SUB):
        word = _row_word(data, stream + row * dvid_bits, dvid_bits)
        packed = 0
        if dvid_bits == 3:
            for k in range(4):
                entry = pairs[(word >> (18 - 6 * k)) & 63]
                used |= entry >> 16
                packed |= (entry & 0xFFFF) << (2 * k * bits)
        else:
            for x in range(SUB):
                value = (word >> ((SUB - 1 - x) * dvid_bits)) & field
                used |= 1 << value
                packed |= ranks[value] << (x * bits)
        if bits == 8:
            _store_word(out, base + 2 * row, np.uint64(packed))
        elif bits:
            at = base + ((row * SUB * bits) >> 5)
            shift = (row * SUB * bits) & 31
            if shift:
                out[at] |= np.uint32(packed << shift)
            else:
                out[at] = np.uint32(packed)
    return used


@numba.njit(nogil=True)
def _put_index(out, base, voxel, bits, index):  # pragma: no cover - compiled
    """Voxel `voxel`'s table index into the block's values at out[base] (bits-wide, LSB-first; the
    words zeroed beforehand)."""
    bit = voxel * bits
    out[base + (bit >> 5)] |= np.uint32(index) << np.uint32(bit & 31)


@numba.njit(nogil=True)
def _encode_voxels(data, stream, dvid_bits, ranks, bits, ax, ay, az, out, base):  # pragma: no cover - compiled
    """Any sub-block, voxel by voxel: the voxels inside (ax, ay, az) written, the others left 0."""
    out[base : base + 16 * bits] = 0
    for z in range(az):
        for y in range(ay):
            for x in range(ax):
                voxel = (z * SUB + y) * SUB + x
                _put_index(out, base, voxel, bits, ranks[_position(data, stream, dvid_bits, voxel)])


@numba.njit(nogil=True)
def _table_and_ranks(labels, used, ns, table, ranks):  # pragma: no cover - compiled
    """The cseg table of a palette: the sorted distinct labels of its used positions into `table`
    (returns how many), and each position's index in it into `ranks` (two labels, the commonest
    palette, without the general sort)."""
    if ns == 2 and used[0] and used[1]:
        first, second = labels[0], labels[1]
        table[0] = min(first, second)
        table[1] = max(first, second)
        ranks[0] = 1 if first > second else 0
        ranks[1] = 1 if second > first else 0
        return 1 if first == second else 2
    m = _sorted_labels(labels, used, ns, table)
    for p in range(ns):
        ranks[p] = _rank(labels[p], table, m)
    return m


@numba.njit(nogil=True)
def _table_slots(blocks):  # pragma: no cover - compiled
    """Slots of the hash of written tables: a power of two, at least twice the chunk's blocks."""
    slots = 1
    while slots < 2 * blocks:
        slots *= 2
    return slots


@numba.njit(nogil=True)
def _tables_size(blocks):  # pragma: no cover - compiled
    """int64 words `_put_block` keeps its written tables in, for a chunk of `blocks` blocks."""
    return 3 + _table_slots(blocks) + 2 * blocks


@numba.njit(nogil=True)
def _start_tables(tables, blocks):  # pragma: no cover - compiled
    """No table written yet: tables = [written, last table's word, its length, hash slots (1 + index of a
    written table), each written table's word, its length]."""
    tables[: 3 + _table_slots(blocks)] = 0
    tables[1] = -1


@numba.njit(nogil=True)
def _block_at(block, bx, by, ex, ey, ez):  # pragma: no cover - compiled
    """Block `block` (z, y, x order, x fastest) of a chunk of extent (ex, ey, ez) that is bx × by
    blocks a z slice: its position (x, y, z) in blocks and its voxels inside (ax, ay, az)."""
    x, y, z = block % bx, block // bx % by, block // (bx * by)
    return x, y, z, min(SUB, ex - SUB * x), min(SUB, ey - SUB * y), min(SUB, ez - SUB * z)


@numba.njit(nogil=True)
def _new_chunk(room):  # pragma: no cover - compiled
    """`room` uint32 words for a chunk's bytes, its one channel starting at word 1; the channel's
    block headers (2 words a block) come first, then each block's values and table (`_put_block`)."""
    out = np.empty(room, dtype=np.uint32)
    out[0] = 1
    return out


@numba.njit(nogil=True)
def _put_block(out, block, values, bits, cseg_table, m, tables, blocks):  # pragma: no cover - compiled
    """Finish cseg block `block` of a chunk being written into `out` (uint32 words; word 0 is the
    channel's start, 1, and the channel's block headers follow): its values are already at word
    `values` (16·bits words), its sorted table is cseg_table[:m]. The table goes right after the
    values unless an identical table was written earlier in the chunk (then the block points at
    that one, as every cseg encoder does); the header is written. Returns the words used so far."""
    slots = _table_slots(blocks)
    written_at = 3 + slots  # where in `tables` the written tables' words, then lengths, start
    written_length = written_at + blocks
    values_at = values - 1
    value_words = 16 * bits
    last_at, last_length = tables[1], tables[2]
    # Most often the previous block's table.
    if m == last_length and _same_table(out, last_at, cseg_table, m):
        table_at = last_at
    else:
        h = _table_hash(cseg_table, m)
        slot = np.int64(h >> np.uint64(40)) & (slots - 1)
        table_at = -1
        while tables[3 + slot]:
            k = tables[3 + slot] - 1
            if tables[written_length + k] == m and _same_table(out, tables[written_at + k], cseg_table, m):
                table_at = tables[written_at + k]
                break
            slot = (slot + 1) & (slots - 1)
        if table_at < 0:
            table_at = values_at + value_words
            written = tables[0]
            tables[written_at + written] = table_at
            tables[written_length + written] = m
            tables[0] = written + 1
            tables[3 + slot] = written + 1
            for i in range(m):
                out[1 + table_at + 2 * i] = np.uint32(cseg_table[i] & _LOW_WORD)
                out[2 + table_at + 2 * i] = np.uint32(cseg_table[i] >> np.uint64(32))
        tables[1] = table_at
        tables[2] = m
    out[1 + 2 * block] = np.uint32(table_at | (bits << 24))
    out[2 + 2 * block] = np.uint32(values_at)
    return max(values + value_words, 1 + table_at + 2 * m)


@numba.njit(cache=True, nogil=True)
def _transcode(data, n, gx, gy, gz, table, mapped, solid_label, ex, ey, ez):  # pragma: no cover - compiled
    """The cseg chunk of extent (ex, ey, ez) as uint32 words. Returns (code, sub-block, detail,
    words, any label non-zero); code/sub-block/detail as block_codec's passes report them. A block
    of n <= 1 labels has `solid_label` everywhere."""
    nsb = gx * gy * gz
    counts_at = HEADER_BYTES + 8 * n
    bx, by, bz = (ex + SUB - 1) // SUB, (ey + SUB - 1) // SUB, (ez + SUB - 1) // SUB
    blocks = bx * by * bz
    # One allocation per type for all the scratch arrays (allocations cost more than the small blocks).
    ints = np.empty(3 * nsb + SUB_VOXELS + 64 + _tables_size(blocks), dtype=np.int64)
    palette_at, stream_at, counts = ints[:nsb], ints[nsb : 2 * nsb], ints[2 * nsb : 3 * nsb]
    ranks = ints[3 * nsb : 3 * nsb + SUB_VOXELS]  # palette position -> index in the cseg table
    pairs = ints[3 * nsb + SUB_VOXELS : 3 * nsb + SUB_VOXELS + 64]
    tables = ints[3 * nsb + SUB_VOXELS + 64 :]  # the tables written so far (_put_block)
    ranks[:] = 0
    _start_tables(tables, blocks)
    words = np.empty(2 * SUB_VOXELS, dtype=np.uint64)
    labels, cseg_table = words[:SUB_VOXELS], words[SUB_VOXELS:]  # this sub-block's palette as labels; its cseg table
    flags = np.empty(2 * SUB_VOXELS, dtype=np.uint8)
    every, used = flags[:SUB_VOXELS], flags[SUB_VOXELS:]
    every[:] = 1
    if n > 1:
        code, sub_block, detail = _locate_sub_blocks(data, n, gx, gy, gz, palette_at, stream_at)
        if code != _OK:
            return code, sub_block, detail, _NO_WORDS, False
    counts[:] = 1  # palette sizes (a solid block: one label everywhere)
    if n > 1:
        for sb in range(nsb):
            counts[sb] = np.int64(data[counts_at + 2 * sb]) | (np.int64(data[counts_at + 2 * sb + 1]) << 8)
    # Room for the worst case: every block's table new and as long as its palette.
    room = 1 + 2 * blocks
    for z in range(bz):
        for y in range(by):
            for x in range(bx):
                ns = max(counts[(z * gy + y) * gx + x], 1)
                room += 16 * _cseg_bits(ns) + 2 * ns
    out = _new_chunk(room)
    size = 1 + 2 * blocks  # words written (absolute; the channel starts at word 1)
    nonzero = False

    for block in range(blocks):
        x, y, z, ax, ay, az = _block_at(block, bx, by, ex, ey, ez)
        sb = (z * gy + y) * gx + x
        ns = counts[sb]
        if n <= 1:
            labels[0] = solid_label
        else:
            _palette_labels(data, palette_at[sb], ns, table, mapped, labels)
        values = size  # where this block's values go (absolute)
        if ns <= 1:  # no stream: one label (0 for an uninitialised sub-block)
            cseg_table[0] = labels[0] if ns == 1 else np.uint64(0)
            m = 1
            bits = 0
        else:
            dvid_bits = _dvid_bits(ns)
            stream = stream_at[sb]
            voxel_by_voxel = True
            if dvid_bits <= 6 and ax == SUB and ay == SUB and az == SUB:
                # Every palette entry is normally used: encode with the table of all of
                # them, and redo voxel by voxel only if some entry turns out unused.
                m = _table_and_ranks(labels, every, ns, cseg_table, ranks)
                bits = _cseg_bits(m)
                if dvid_bits == 1 and m == 2:
                    seen = _one_bit(data, stream, np.uint64(0xFFFFFFFFFFFFFFFF) if ranks[0] else np.uint64(0), out, values)
                elif dvid_bits == 2 and m >= 3:
                    seen = _two_bits(data, stream, ranks, out, values)
                else:
                    seen = _rows(data, stream, dvid_bits, ranks, bits, pairs, out, values)
                if ns < 64 and seen >> ns:
                    return _VALUE_PAST_PALETTE, sb, stream, _NO_WORDS, False
                voxel_by_voxel = seen != (-1 if ns == 64 else (1 << ns) - 1)
            if voxel_by_voxel:
                used[: 1 << dvid_bits] = 0
                if _scan(data, stream, dvid_bits, ax, ay, az, used) >= ns:
                    return _VALUE_PAST_PALETTE, sb, stream, _NO_WORDS, False
                m = _table_and_ranks(labels, used, ns, cseg_table, ranks)
                bits = _cseg_bits(m)
                _encode_voxels(data, stream, dvid_bits, ranks, bits, ax, ay, az, out, values)
        nonzero |= cseg_table[m - 1] != 0
        size = _put_block(out, block, values, bits, cseg_table, m, tables, blocks)
    # Sub-blocks beyond the volume's edge are not stored, but their values are checked all the same.
    for sb in range(nsb):
        ns = counts[sb]
        if ns < 2 or (sb % gx < bx and (sb // gx) % gy < by and sb // (gx * gy) < bz):
            continue
        if _scan(data, stream_at[sb], _dvid_bits(ns), 0, 0, 0, used) >= ns:
            return _VALUE_PAST_PALETTE, sb, stream_at[sb], _NO_WORDS, False
    return _OK, -1, 0, out[:size], nonzero



# ---------------------------------------------------------------------------------------------
# From uint64 voxels (the downres scales, which have voxels, not DVID blocks)

# A block with up to this many distinct labels is tabled and indexed by comparing each voxel with
# every label of its table (branch-free, cheap for the few labels of most blocks); beyond, by
# sorting its voxels and a binary search per voxel.
_FEW_LABELS = 8


@numba.njit(nogil=True)
def _uniform_in(a, i0, j0, k0, ni, nj, nk):  # pragma: no cover - compiled
    """Whether a[i0:i0+ni, j0:j0+nj, k0:k0+nk] is all one label, the first index innermost."""
    first = a[i0, j0, k0]
    for k in range(nk):
        for j in range(nj):
            same = True
            for i in range(ni):
                same &= a[i0 + i, j0 + j, k0 + k] == first
            if not same:
                return False
    return True


@numba.njit(nogil=True)
def _uniform(voxels, x0, y0, z0, ax, ay, az):  # pragma: no cover - compiled
    """Whether the voxels of the block at (x0, y0, z0) inside (ax, ay, az) are all one label (most
    blocks of a segmentation are; they need nothing but their label), looping along the array's
    shortest stride."""
    if abs(voxels.strides[0]) <= abs(voxels.strides[2]):
        return _uniform_in(voxels, x0, y0, z0, ax, ay, az)
    return _uniform_in(voxels.T, z0, y0, x0, az, ay, ax)


@numba.njit(nogil=True)
def _gather_in(a, i0, j0, k0, ni, nj, nk, block_values, si, sj, sk):  # pragma: no cover - compiled
    """a[i0 + i, j0 + j, k0 + k] into block_values[i·si + j·sj + k·sk], the first index innermost."""
    for k in range(nk):
        for j in range(nj):
            for i in range(ni):
                block_values[i * si + j * sj + k * sk] = a[i0 + i, j0 + j, k0 + k]


@numba.njit(nogil=True)
def _gather(voxels, x0, y0, z0, ax, ay, az, block_values):  # pragma: no cover - compiled
    """The voxels of the block at (x0, y0, z0) inside (ax, ay, az) into block_values, x fastest as cseg
    orders them (looping along the array's shortest stride)."""
    if abs(voxels.strides[0]) <= abs(voxels.strides[2]):
        _gather_in(voxels, x0, y0, z0, ax, ay, az, block_values, 1, SUB, SUB * SUB)
    else:
        _gather_in(voxels.T, z0, y0, x0, az, ay, ax, block_values, SUB * SUB, SUB, 1)


@numba.njit(nogil=True)
def _table_of_voxels(block_values, ax, ay, az, cseg_table):  # pragma: no cover - compiled
    """The sorted distinct labels of the voxels inside (ax, ay, az) into cseg_table; returns how many.
    Each voxel is compared with all _FEW_LABELS slots at once (the unfilled ones hold a label already
    seen), so the common case has a fixed, vectorised loop and one well-predicted branch."""
    cseg_table[:_FEW_LABELS] = block_values[0]
    m = 1
    for z in range(az):
        for y in range(ay):
            for x in range(ax):
                value = block_values[(z * SUB + y) * SUB + x]
                known = False
                for k in range(_FEW_LABELS):
                    known |= cseg_table[k] == value
                if not known:
                    if m == _FEW_LABELS:
                        return _table_by_sorting(block_values, ax, ay, az, cseg_table)
                    cseg_table[m] = value
                    m += 1
    cseg_table[:m].sort()
    cseg_table[m:_FEW_LABELS] = cseg_table[m - 1]  # for _index's fixed loop: never below a label
    return m


@numba.njit(nogil=True)
def _table_by_sorting(block_values, ax, ay, az, cseg_table):  # pragma: no cover - compiled
    """`_table_of_voxels` for many labels: sort the voxels inside and keep each label once."""
    inside = np.empty(ax * ay * az, dtype=np.uint64)
    n = 0
    for z in range(az):
        for y in range(ay):
            for x in range(ax):
                inside[n] = block_values[(z * SUB + y) * SUB + x]
                n += 1
    inside.sort()
    m = 0
    for i in range(n):
        if m == 0 or inside[i] != cseg_table[m - 1]:
            cseg_table[m] = inside[i]
            m += 1
    return m


@numba.njit(nogil=True)
def _index(value, cseg_table, m):  # pragma: no cover - compiled
    """A label's index in the sorted table: the count of smaller labels, or a binary search when many."""
    if m > _FEW_LABELS:
        return _rank(value, cseg_table, m)
    index = 0
    for k in range(_FEW_LABELS):  # past m the table repeats its largest label (_table_of_voxels)
        index += cseg_table[k] < value
    return index


@numba.njit(nogil=True)
def _pack(block_values, cseg_table, m, bits, whole, ax, ay, az, out, values):  # pragma: no cover - compiled
    """The block's values at `bits` bits each (each voxel's index in the table), LSB-first into
    16·bits uint32 words at out[values]; in a clipped block the voxels outside stay 0."""
    if whole:
        per_word = 32 // bits
        for w in range(16 * bits):
            word = np.uint32(0)
            for j in range(per_word):
                word |= np.uint32(_index(block_values[w * per_word + j], cseg_table, m)) << np.uint32(j * bits)
            out[values + w] = word
        return
    out[values : values + 16 * bits] = 0
    for z in range(az):
        for y in range(ay):
            for x in range(ax):
                p = (z * SUB + y) * SUB + x
                _put_index(out, values, p, bits, _index(block_values[p], cseg_table, m))


@numba.njit(cache=True, nogil=True)
def _encode(voxels):  # pragma: no cover - compiled
    """The cseg chunk of an (x, y, z) uint64 array as uint32 words, and whether any label is non-zero."""
    ex, ey, ez = voxels.shape
    bx, by, bz = (ex + SUB - 1) // SUB, (ey + SUB - 1) // SUB, (ez + SUB - 1) // SUB
    blocks = bx * by * bz
    tables = np.empty(_tables_size(blocks), dtype=np.int64)
    _start_tables(tables, blocks)
    words = np.empty(2 * SUB_VOXELS, dtype=np.uint64)
    block_values, cseg_table = words[:SUB_VOXELS], words[SUB_VOXELS:]
    out = _new_chunk(1 + 2 * blocks + 34 * blocks)  # room for 1-2 bit blocks; grown when more is needed
    size = 1 + 2 * blocks
    nonzero = False
    for block in range(blocks):
        x, y, z, ax, ay, az = _block_at(block, bx, by, ex, ey, ez)
        whole = ax == SUB and ay == SUB and az == SUB
        # Whole blocks with constant loop bounds: the compiler unrolls and vectorises them.
        if _uniform(voxels, SUB * x, SUB * y, SUB * z, SUB, SUB, SUB) if whole else _uniform(voxels, SUB * x, SUB * y, SUB * z, ax, ay, az):
            cseg_table[0] = voxels[SUB * x, SUB * y, SUB * z]
            m = 1
        else:
            if whole:
                _gather(voxels, SUB * x, SUB * y, SUB * z, SUB, SUB, SUB, block_values)
            else:
                _gather(voxels, SUB * x, SUB * y, SUB * z, ax, ay, az, block_values)
            m = _table_of_voxels(block_values, ax, ay, az, cseg_table)
        bits = _cseg_bits(m)
        if size + 16 * bits + 2 * m > out.size:
            grown = np.empty(2 * (size + 16 * bits + 2 * m), dtype=np.uint32)
            grown[:size] = out[:size]
            out = grown
        if bits:
            _pack(block_values, cseg_table, m, bits, whole, ax, ay, az, out, size)
        nonzero |= cseg_table[m - 1] != 0
        size = _put_block(out, block, size, bits, cseg_table, m, tables, blocks)
    return out[:size], nonzero


def encode_chunk(voxels: np.ndarray) -> bytes | None:
    """The neuroglancer compressed_segmentation bytes (block size 8³, one channel) of a uint64 chunk
    indexed (x, y, z), in any memory layout, of any shape up to 64³ (a chunk clipped at the volume's
    edge is passed clipped): exactly what tensorstore's neuroglancer_precomputed driver stores for
    it (the layout, table reuse and clipped blocks of the module docstring). None when every voxel
    is 0 (tensorstore stores nothing then)."""
    voxels = np.asarray(voxels)
    if voxels.dtype != np.uint64 or voxels.ndim != 3 or not all(0 < n <= CHUNK_EXTENT[0] for n in voxels.shape):
        raise ValueError(f"a compressed_segmentation chunk is a 3-D uint64 array of at most 64 voxels a side, not {voxels.dtype} of shape {voxels.shape}")
    words, nonzero = _encode(voxels)
    return words.tobytes() if nonzero else None


def _extent(extent: tuple[int, int, int], header: tuple[int, int, int, int]) -> tuple[int, int, int]:
    gx, gy, gz, _ = header
    ex, ey, ez = (int(e) for e in extent)
    if not (0 < ex <= SUB * gx and 0 < ey <= SUB * gy and 0 < ez <= SUB * gz):
        raise BlockFormatError(f"a chunk extent of {ex}x{ey}x{ez} voxels does not fit the block's {SUB * gx}x{SUB * gy}x{SUB * gz}")
    return ex, ey, ez


def transcode_chunk(data: BlockBytes, mapped_table: np.ndarray | None, extent: tuple[int, int, int] = CHUNK_EXTENT) -> bytes | None:
    """The neuroglancer compressed_segmentation bytes (block size 8³, one channel, uint64) of the chunk
    a DVID block (zstd already removed; `data` as block_codec takes it) becomes, with the block's label table
    replaced by `mapped_table` (labels) or kept (None: supervoxels). `extent` (x, y, z) is the chunk clipped to
    the volume (a partial edge chunk); the bytes are exactly what tensorstore's neuroglancer_precomputed driver
    stores for that chunk. None when every voxel of the (clipped) chunk is 0 (the array path writes nothing then)."""
    raw = _as_array(data)
    header = block_header(raw)
    gx, gy, gz, n = header
    ex, ey, ez = _extent(extent, header)
    mapped = checked_table(mapped_table, n)
    solid = solid_value(raw, n, mapped) if n <= 1 else 0
    if n <= 1 and solid == 0:
        return None
    code, sub_block, detail, words, nonzero = _transcode(
        raw, n, gx, gy, gz, _NO_TABLE if mapped is None else mapped, mapped is not None, np.uint64(solid), ex, ey, ez
    )
    raise_block_error(raw, n, code, sub_block, detail)
    return words.tobytes() if nonzero else None


def reference_transcode_chunk(data: BlockBytes, mapped_table: np.ndarray | None, extent: tuple[int, int, int] = CHUNK_EXTENT) -> bytes | None:
    """`transcode_chunk` the slow way, the reference the tests and benchmarks hold it to: decode the
    uint64 voxels, clip them to `extent` and encode them with the `compressed-segmentation` package
    (neuroglancer's encoder; a test dependency)."""
    import compressed_segmentation

    raw = _as_array(data)
    ex, ey, ez = _extent(extent, block_header(raw))
    clipped = decode_block(raw, mapped_table)[:ez, :ey, :ex]
    if not clipped.any():
        return None
    # x fastest, as the format stores voxels: the x, y, z view of a z, y, x C-order array is Fortran order.
    return compressed_segmentation.compress(np.asfortranarray(clipped.transpose(2, 1, 0)), block_size=(SUB, SUB, SUB), order="F")
