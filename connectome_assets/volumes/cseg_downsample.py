"""2×2×2 mode of a compressed_segmentation chunk, straight from its bytes.

A downres chunk of scale k is the mode (`downres.py`, both tie rules) of 2×2×2 groups of scale
k−1 voxels. With even chunk and cseg block sizes (64³ chunks, 8³ blocks: `precomputed.info_from_spec`)
every group lies inside one 8³ cseg block of one parent chunk, so each parent block is reduced on
its own, without the parent's uint64 voxels ever being laid out: a block with a one-label table
(bits 0: most of a segmentation) fills its 4³ output at once; any other block has its 512 indices
unpacked into a small buffer that stays in cache, and each group takes its mode there. A chunk cut
by the volume's upper edge (stored at its clipped extent) has partial groups at the odd edge; they
take the mode of the voxels they have, exactly as `downres.downsample_mode` does.

The chunk layout (one channel) is that of `cseg_transcode.py`: word 0 = 1, then per block
(table offset | bits << 24, values offset), offsets in uint32 words from word 1. Every offset and
index is checked against the chunk's length, so a corrupt chunk gives an error, never a read past it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numba
import numpy as np

from connectome_assets.volumes.downres import RULES, _mode_of_block  # the one mode of 8 labels, both rules

BLOCK = 8

# Error codes of the compiled pass (numba cannot raise formatted messages).
_OK, _SHORT, _CHANNEL, _BITS, _VALUES_PAST_END, _TABLE_PAST_END = 0, 1, 2, 3, 4, 5
_LOW24 = 0xFFFFFF


class CsegChunkError(ValueError):
    """A chunk whose bytes do not follow the compressed_segmentation layout."""


@numba.njit(cache=True, nogil=True, inline="always")
def _label(words, at):  # pragma: no cover - compiled
    return np.uint64(words[at]) | (np.uint64(words[at + 1]) << np.uint64(32))


@numba.njit(cache=True, nogil=True)
def _downsample_into(words, sx, sy, sz, out, ox, oy, oz, ignore_zero):  # pragma: no cover - compiled
    """out[i, j, k] = the mode of the chunk's group (2(i−ox) … , 2(j−oy) …, 2(k−oz) …) for every
    (i, j, k) of `out` the chunk covers; the chunk (uint32 words) is stored at extent sx × sy × sz.
    Returns (code, block, detail)."""
    n = words.size
    gx, gy, gz = (sx + BLOCK - 1) // BLOCK, (sy + BLOCK - 1) // BLOCK, (sz + BLOCK - 1) // BLOCK
    blocks = gx * gy * gz
    if n < 1 + 2 * blocks:
        return _SHORT, blocks, n
    if words[0] != 1:
        return _CHANNEL, 0, words[0]
    mx, my, mz = out.shape
    labels = np.empty(BLOCK**3, dtype=np.uint64)
    for block in range(blocks):
        bx, by, bz = block % gx, block // gx % gy, block // (gx * gy)
        ax, ay, az = min(BLOCK, sx - BLOCK * bx), min(BLOCK, sy - BLOCK * by), min(BLOCK, sz - BLOCK * bz)
        # This block's output voxels in `out` (a group never straddles two blocks: BLOCK is even).
        x_at, y_at, z_at = ox + BLOCK // 2 * bx, oy + BLOCK // 2 * by, oz + BLOCK // 2 * bz
        i0, i1 = max(x_at, 0), min(x_at + (ax + 1) // 2, mx)
        j0, j1 = max(y_at, 0), min(y_at + (ay + 1) // 2, my)
        k0, k1 = max(z_at, 0), min(z_at + (az + 1) // 2, mz)
        if i0 >= i1 or j0 >= j1 or k0 >= k1:
            continue
        header = words[1 + 2 * block]
        table_at = 1 + np.int64(header & _LOW24)
        bits = np.int64(header >> 24)
        if table_at + 2 > n:
            return _TABLE_PAST_END, block, table_at
        if bits == 0:  # one label: its whole output (loops: numba's slice assignment was slower)
            label = _label(words, table_at)
            for k in range(k0, k1):
                for j in range(j0, j1):
                    for i in range(i0, i1):
                        out[i, j, k] = label
            continue
        if bits != 1 and bits != 2 and bits != 4 and bits != 8 and bits != 16 and bits != 32:
            return _BITS, block, bits
        values_at = 1 + np.int64(words[2 + 2 * block])
        if values_at + 16 * bits > n:
            return _VALUES_PAST_END, block, values_at
        entries = (n - table_at) // 2  # table entries that fit before the chunk's end
        mask = np.uint32(0xFFFFFFFF) if bits == 32 else np.uint32((1 << bits) - 1)
        for z in range(az):
            for y in range(ay):
                for x in range(ax):
                    voxel = x + BLOCK * (y + BLOCK * z)
                    bit = voxel * bits
                    index = np.int64((words[values_at + (bit >> 5)] >> np.uint32(bit & 31)) & mask)
                    if index >= entries:
                        return _TABLE_PAST_END, block, table_at + 2 * index
                    labels[voxel] = _label(words, table_at + 2 * index)
        # A partial group at an odd edge repeats its last voxel: every voxel it has counts the same
        # number of times, so the mode and its ties are those of the voxels alone.
        for k in range(k0, k1):
            z0 = 2 * (k - z_at)
            z1 = min(z0 + 1, az - 1)
            for j in range(j0, j1):
                y0 = 2 * (j - y_at)
                y1 = min(y0 + 1, ay - 1)
                # Where the four x rows of the group start in the block's z, y, x order.
                p00, p01 = BLOCK * (y0 + BLOCK * z0), BLOCK * (y1 + BLOCK * z0)
                p10, p11 = BLOCK * (y0 + BLOCK * z1), BLOCK * (y1 + BLOCK * z1)
                for i in range(i0, i1):
                    x0 = 2 * (i - x_at)
                    x1 = min(x0 + 1, ax - 1)
                    a, b = labels[p00 + x0], labels[p00 + x1]
                    c, d = labels[p01 + x0], labels[p01 + x1]
                    e, f = labels[p10 + x0], labels[p10 + x1]
                    g, h = labels[p11 + x0], labels[p11 + x1]
                    if a == b and a == c and a == d and a == e and a == f and a == g and a == h:
                        out[i, j, k] = a
                    else:
                        out[i, j, k] = _mode_of_block(a, b, c, d, e, f, g, h, ignore_zero)
    return _OK, 0, 0


def downsample_chunk_into(
    out: np.ndarray, data: bytes | memoryview, extent: Sequence[int], offset: Sequence[int], rule: str = "tensorstore"
) -> None:
    """Write the 2×2×2 mode of one compressed_segmentation chunk into `out`.

    `out`: a uint64 array (x, y, z), the part of scale k being built (e.g. one chunk). `data`: the
    parent chunk's bytes (uint64 labels, one channel, 8³ blocks), stored at `extent` (x, y, z) —
    its shape clipped to the volume. `offset`: where the chunk's first group lands in `out`
    (chunk origin / 2 − out's origin), per axis; groups landing outside `out` are skipped. Raises
    CsegChunkError (one sentence, without the chunk's name: the caller has it) for a corrupt chunk.
    """
    if rule not in RULES:
        raise ValueError(f"unknown mode rule {rule!r}: expected one of {', '.join(RULES)}")
    if out.dtype != np.uint64 or out.ndim != 3:
        raise TypeError(f"the output is a 3-D uint64 array, not {out.ndim}-D {out.dtype}")
    if len(data) % 4:
        raise CsegChunkError(f"the chunk is {len(data)} bytes, not a whole number of 32-bit words")
    words = np.frombuffer(data, dtype="<u4")
    sx, sy, sz = (int(n) for n in extent)
    code, block, detail = _downsample_into(words, sx, sy, sz, out, *(int(n) for n in offset), rule == "dvid")
    if code == _OK:
        return
    if code == _SHORT:
        raise CsegChunkError(f"the chunk is {words.size} words, too short for the headers of its {block} blocks")
    if code == _CHANNEL:
        raise CsegChunkError(f"the chunk's channel starts at word {detail}, not 1 (one channel of uint64 labels)")
    if code == _BITS:
        raise CsegChunkError(f"block {block} has {detail} bits per index (0, 1, 2, 4, 8, 16 or 32 are possible)")
    if code == _VALUES_PAST_END:
        raise CsegChunkError(f"block {block}'s indices start at word {detail}, past the end of the chunk's {words.size} words")
    raise CsegChunkError(f"block {block} names a table entry at word {detail}, past the end of the chunk's {words.size} words")
