"""The 2×2×2 mode straight from compressed_segmentation bytes (`cseg_downsample`, the downres path)
equals `downsample_mode` of the decoded voxels: real chunks, clipped edge chunks, every index width,
both tie rules, chunks placed at any offset of the output; corrupt chunks give one sentence."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from connectome_assets.volumes.block_codec import decode_block
from connectome_assets.volumes.cseg_downsample import CsegChunkError, downsample_chunk_into
from connectome_assets.volumes.downres import downsample_mode


def cseg(voxels: np.ndarray) -> bytes:
    """The chunk's bytes as neuroglancer's encoder writes them (an all-zero chunk too)."""
    import compressed_segmentation

    return compressed_segmentation.compress(np.asfortranarray(voxels), block_size=(8, 8, 8), order="F")


def from_bytes(data: bytes, extent: tuple[int, int, int], rule: str = "tensorstore") -> np.ndarray:
    out = np.full(tuple((n + 1) // 2 for n in extent), 12345, np.uint64)  # every voxel must be written
    downsample_chunk_into(out, data, extent, (0, 0, 0), rule)
    return out


@pytest.mark.parametrize("rule", ["tensorstore", "dvid"])
def test_real_chunks_whole_and_clipped_equal_downsample_mode(real_blocks: list, rule: str) -> None:
    rng = np.random.default_rng(3)
    for _, block, labels in real_blocks[::3]:
        for mapped in (labels, None):
            voxels = decode_block(block, mapped).transpose(2, 1, 0)  # (x, y, z)
            assert np.array_equal(from_bytes(cseg(voxels), voxels.shape, rule), downsample_mode(voxels, rule))
            clipped = voxels[: rng.integers(1, 65), : rng.integers(1, 65), : rng.integers(1, 65)]  # odd edges too
            assert np.array_equal(from_bytes(cseg(clipped), clipped.shape, rule), downsample_mode(clipped, rule))


@pytest.mark.parametrize("distinct", [1, 2, 3, 5, 17, 300])  # tables of 0, 1, 2, 4, 8 and 16 bits per index
def test_every_index_width(distinct: int) -> None:
    rng = np.random.default_rng(distinct)
    labels = rng.choice(np.array([0, 1, 2**63 + 5, 2**40, 7, 2**64 - 1] + list(range(100, 400)), np.uint64), distinct, replace=False)
    voxels = labels[rng.integers(0, distinct, (64, 48, 40))]
    for rule in ("tensorstore", "dvid"):
        assert np.array_equal(from_bytes(cseg(voxels), voxels.shape, rule), downsample_mode(voxels, rule))


def test_ties_and_zeros_follow_the_rule() -> None:
    voxels = np.zeros((8, 8, 8), np.uint64)
    voxels[0, 0, :2] = 7  # group (0, 0, 0): five zeros and three 7s
    voxels[0, 1, 0] = 7
    voxels[2:4, 0:2, 0:2] = [[[9, 9], [9, 9]], [[4, 4], [4, 4]]]  # group (1, 0, 0): a 4-4 tie between 9 and 4
    assert from_bytes(cseg(voxels), voxels.shape, "tensorstore")[0, 0, 0] == 0
    assert from_bytes(cseg(voxels), voxels.shape, "dvid")[0, 0, 0] == 7
    assert from_bytes(cseg(voxels), voxels.shape)[1, 0, 0] == 4


def test_eight_parent_chunks_make_the_chunk_above_and_a_window_takes_only_its_part() -> None:
    rng = np.random.default_rng(5)
    cubes = rng.integers(0, 6, (32, 30, 25)).astype(np.uint64)  # one label per 4 × 4 × 5 cube: uniform and mixed blocks
    region = np.repeat(np.repeat(np.repeat(cubes, 4, axis=0), 4, axis=1), 5, axis=2)  # 128 × 120 × 125: clipped in y and z
    expected = downsample_mode(region)
    out = np.zeros(expected.shape, np.uint64)
    for x in (0, 64):
        for y in (0, 64):
            for z in (0, 64):
                chunk = region[x : x + 64, y : y + 64, z : z + 64]
                downsample_chunk_into(out, cseg(chunk), chunk.shape, (x // 2, y // 2, z // 2))
    assert np.array_equal(out, expected)
    window = np.zeros((20, 7, 32), np.uint64)  # output voxels [10, 30) × [40, 47) × [30, 62) of the chunk above
    for x in (0, 64):
        for y in (0, 64):
            for z in (0, 64):
                chunk = region[x : x + 64, y : y + 64, z : z + 64]
                downsample_chunk_into(window, cseg(chunk), chunk.shape, (x // 2 - 10, y // 2 - 40, z // 2 - 30))
    assert np.array_equal(window, expected[10:30, 40:47, 30:62])


def hand_built(bits: int, indices: np.ndarray, table: list[int], *, values_at: int = 2, channel: int = 1) -> bytes:
    """An 8³ one-block chunk with `bits`-wide indices (packed LSB-first), as the format allows: its
    header, its values at channel word 2, its table after them; `values_at` overrides the header's
    values offset."""
    value_words = 16 * bits
    packed = np.zeros(value_words, np.uint64)
    for voxel, index in enumerate(indices.tolist()):
        bit = voxel * bits
        packed[bit >> 5] |= np.uint64(index << (bit & 31))
    words = [channel, (2 + value_words) | bits << 24, values_at] + packed.astype(np.uint32).tolist()
    for label in table:
        words += [label & 0xFFFFFFFF, label >> 32]
    return struct.pack(f"<{len(words)}I", *words)


def test_32_bit_indices_which_no_encoder_writes_but_the_format_allows() -> None:
    rng = np.random.default_rng(9)
    table = [int(v) for v in rng.integers(1, 2**63, 4, dtype=np.uint64)]
    indices = rng.integers(0, 4, 512)
    voxels = np.array(table, np.uint64)[indices].reshape(8, 8, 8).transpose(2, 1, 0)  # index order is z, y, x
    assert np.array_equal(from_bytes(hand_built(32, indices, table), (8, 8, 8)), downsample_mode(voxels))


@pytest.mark.parametrize(
    ("chunk", "extent", "sentence"),
    [
        (b"\x01\x00\x00", (8, 8, 8), "the chunk is 3 bytes, not a whole number of 32-bit words"),
        (struct.pack("<3I", 1, 0, 0), (16, 8, 8), "the chunk is 3 words, too short for the headers of its 2 blocks"),
        (hand_built(1, np.zeros(512, int), [5, 6], channel=2), (8, 8, 8), "the chunk's channel starts at word 2, not 1"),
        (hand_built(3, np.zeros(512, int), [5, 6]), (8, 8, 8), "block 0 has 3 bits per index"),
        (hand_built(2, np.zeros(512, int), [5], values_at=90), (8, 8, 8), "block 0's indices start at word 91, past the end of the chunk's 37 words"),
        (hand_built(2, np.full(512, 3), [5, 6]), (8, 8, 8), "block 0 names a table entry at word 41, past the end of the chunk's 39 words"),
        (hand_built(2, np.zeros(512, int), [5, 6])[:-12], (8, 8, 8), "block 0 names a table entry at word 35, past the end of the chunk's 36 words"),
    ],
)
def test_a_corrupt_chunk_is_one_sentence(chunk: bytes, extent: tuple[int, int, int], sentence: str) -> None:
    with pytest.raises(CsegChunkError, match=sentence.replace("(", r"\(").replace(")", r"\)")):
        from_bytes(chunk, extent)

