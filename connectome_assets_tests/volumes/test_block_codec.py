"""The DVID block codec against the real Go-written vectors in ../shared/data/dvid."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from connectome_assets.volumes.block_codec import BlockFormatError, block_table, decode_block, decode_block_into, encode_block


def raw_volume(dvid: Path, name: str) -> np.ndarray:
    return np.frombuffer(gzip.open(dvid / f"{name}.dat.gz").read(), dtype="<u8").reshape(64, 64, 64)


@pytest.fixture(scope="module")
def fib19_block(dvid: Path) -> bytes:
    return gzip.open(dvid / "fib19-64x64x64-sample1-block.dat.gz").read()


def test_go_block_decodes_to_its_ground_truth(dvid: Path, fib19_block: bytes) -> None:
    assert len(fib19_block) == 22_512
    decoded = decode_block(fib19_block)
    truth = raw_volume(dvid, "fib19-64x64x64-sample1")
    assert decoded.shape == (64, 64, 64) and decoded.dtype == np.uint64
    assert np.array_equal(decoded, truth)
    assert decoded[0, 0, 0] == 52038418629 and decoded[63, 63, 63] == 52043487570


def test_encoding_with_go_table_order_reproduces_go_bytes(dvid: Path, fib19_block: bytes) -> None:
    truth = raw_volume(dvid, "fib19-64x64x64-sample1")
    assert encode_block(truth, block_table(fib19_block)) == fib19_block


@pytest.mark.parametrize(
    "name, canonical_bytes",
    [("fib19-64x64x64-sample1", None), ("fib19-64x64x64-sample2", 29_356), ("cx-64x64x64-sample1", 26_396), ("cx-64x64x64-sample2", 8_660)],
)
def test_round_trip(dvid: Path, name: str, canonical_bytes: int | None) -> None:
    volume = raw_volume(dvid, name)
    encoded = encode_block(volume)
    if canonical_bytes is not None:
        assert len(encoded) == canonical_bytes
    assert np.array_equal(decode_block(encoded), volume)


def test_table_mapping_replaces_labels_before_expansion(dvid: Path, fib19_block: bytes) -> None:
    table = block_table(fib19_block)
    mapped = np.where(table == table[0], np.uint64(7), table)  # merge one supervoxel into body 7
    decoded = decode_block(fib19_block, mapped)
    truth = raw_volume(dvid, "fib19-64x64x64-sample1")
    assert np.array_equal(decoded, np.where(truth == table[0], np.uint64(7), truth))
    with pytest.raises(BlockFormatError, match="label mapping has 2 entries"):
        decode_block(fib19_block, table[:2])


def test_solid_and_empty_blocks() -> None:
    solid = struct.pack("<4IQ", 8, 8, 8, 1, 42)
    assert len(solid) == 24 and np.all(decode_block(solid) == 42)
    assert encode_block(np.full((64, 64, 64), 42, np.uint64)) == solid
    assert np.all(decode_block(struct.pack("<4I", 8, 8, 8, 0)) == 0)


def test_bit_packing_is_msb_first_with_odd_widths() -> None:
    """Five labels in one sub-block need 3 bits (not a power of two)."""
    volume = np.zeros((16, 16, 16), np.uint64)
    volume[:8, :8, :8] = (np.arange(512) % 5 + 1).reshape(8, 8, 8)
    encoded = encode_block(volume)
    assert np.array_equal(decode_block(encoded), volume)
    header = 16 + 8 * 6 + 2 * 8 + 4 * (5 + 7)
    # positions 0,1,2,3,4,0,1,2 -> 000 001 010 011 100 000 001 010 -> 05 38 0A
    assert encoded[header : header + 3] == bytes([0x05, 0x38, 0x0A])


def corrupt(block: bytes, at: int, value: bytes) -> bytes:
    return block[:at] + value + block[at + len(value) :]


def test_corrupt_blocks_are_clear_errors(fib19_block: bytes) -> None:
    n = len(block_table(fib19_block))
    palettes_at = 16 + 8 * n + 2 * 512
    with pytest.raises(BlockFormatError, match="past the 18-label table"):
        decode_block(corrupt(fib19_block, palettes_at, struct.pack("<I", 99)))
    with pytest.raises(BlockFormatError, match="truncated"):
        decode_block(fib19_block[: len(fib19_block) // 2])
    with pytest.raises(BlockFormatError, match="3 trailing bytes"):
        decode_block(fib19_block + b"\0\0\0")
    with pytest.raises(BlockFormatError, match="shorter than its 16-byte header"):
        decode_block(b"\x08\0\0\0")
    with pytest.raises(BlockFormatError, match="impossible sub-block grid"):
        decode_block(struct.pack("<4I", 0, 8, 8, 1) + b"\0" * 8)


def volume_with_palettes(sizes: list[int], seed: int = 0, edge: int = 64) -> np.ndarray:
    """A (z, y, x) volume whose sub-block i holds exactly sizes[i % len(sizes)] labels, shuffled."""
    rng = np.random.default_rng(seed)
    g = edge // 8
    sub_blocks = np.empty((g**3, 512), np.uint64)
    for i in range(g**3):
        ns = sizes[i % len(sizes)]
        first = rng.integers(0, 600)  # overlapping label ranges: the table is shared across sub-blocks
        values = np.concatenate([np.arange(ns), rng.integers(0, ns, 512 - ns)]) + first + 1
        sub_blocks[i] = rng.permutation(values)
    return sub_blocks.reshape(g, g, g, 8, 8, 8).transpose(0, 3, 1, 4, 2, 5).reshape(edge, edge, edge)


def output_views(shape: tuple[int, int, int]) -> dict[str, np.ndarray]:
    """(z, y, x)-indexed outputs of every layout decode_block_into handles."""
    z, y, x = shape
    xyz = np.zeros((x + 64, y + 16, z + 8), np.uint64)  # a larger x, y, z buffer, as an s0 writer assembles
    return {
        "zyx": np.zeros(shape, np.uint64),
        "xyz chunk": np.zeros(shape[::-1], np.uint64).T,
        "xyz buffer": xyz[64 : 64 + x, 8 : 8 + y, 8 : 8 + z].transpose(2, 1, 0),
        "zyx buffer": np.zeros((z + 8, y + 8, x + 16), np.uint64)[8:, 8:, 16:],
        "y contiguous": np.zeros((z, x, y), np.uint64).transpose(0, 2, 1),  # no 8-voxel runs: through a temporary
        "odd offset": np.zeros((z, y, x + 3), np.uint64)[:, :, 3:],  # runs not on 8-voxel rows: through a temporary
    }


@pytest.mark.parametrize("sizes", [[1], [2], [3, 4], [5, 6, 7, 8], [9, 16], [17, 100, 255], [256, 257, 512], [1, 2, 3, 5, 9, 33, 257, 1, 1, 2]])
def test_every_palette_width_decodes_into_every_layout(sizes: list[int]) -> None:
    volume = volume_with_palettes(sizes)
    encoded = encode_block(volume)
    assert np.array_equal(decode_block(encoded), volume)
    table = block_table(encoded)
    mapped = table % 97 + 1  # many supervoxels to one body, as the `labels` column does
    expected = table_mapped(volume, table, mapped)
    for name, out in output_views(volume.shape).items():
        assert decode_block_into(encoded, mapped, out) is out
        assert np.array_equal(out, expected), name
        assert np.array_equal(decode_block_into(encoded, None, out), volume), name


def table_mapped(volume: np.ndarray, table: np.ndarray, mapped: np.ndarray) -> np.ndarray:
    order = np.argsort(table)
    return mapped[order[np.searchsorted(table, volume, sorter=order)]]


def test_other_grids_and_inputs(dvid: Path, fib19_block: bytes) -> None:
    volume = volume_with_palettes([1, 2, 3, 9], seed=3, edge=32)[:, :16, :]  # gz=4, gy=2, gx=4
    encoded = encode_block(volume)
    for name, out in output_views(volume.shape).items():
        assert np.array_equal(decode_block_into(encoded, None, out), volume), name
    truth = raw_volume(dvid, "fib19-64x64x64-sample1")
    for data in (bytearray(fib19_block), memoryview(fib19_block), np.frombuffer(fib19_block, np.uint8).copy()):
        assert np.array_equal(decode_block(data), truth)
    assert decode_block(fib19_block).ctypes.data % 64 == 0  # every 8-voxel run is one cache line
    with pytest.raises(ValueError, match=r"needs a writeable uint64 array of shape \(64, 64, 64\), got uint32"):
        decode_block_into(fib19_block, None, np.zeros((64, 64, 64), np.uint32))
    with pytest.raises(ValueError, match="got int64 array of shape"):
        decode_block_into(fib19_block, None, np.zeros((64, 64, 32), np.int64))


def set_value(block: bytes, stream_at: int, bits: int, voxel: int, value: int) -> bytes:
    """The block with one voxel's palette position overwritten (MSB-first, `bits` wide)."""
    stream = np.unpackbits(np.frombuffer(block, np.uint8, count=64 * bits, offset=stream_at))
    stream[voxel * bits : (voxel + 1) * bits] = [(value >> (bits - 1 - j)) & 1 for j in range(bits)]
    return block[:stream_at] + np.packbits(stream).tobytes() + block[stream_at + 64 * bits :]


@pytest.mark.parametrize("ns, bad", [(3, 3), (5, 7), (6, 6), (9, 15), (100, 127), (257, 300)])
def test_a_voxel_past_its_palette_is_a_clear_error_in_every_layout(ns: int, bad: int) -> None:
    volume = np.ones((16, 16, 16), np.uint64)
    volume[:8, :8, 8:] = (np.arange(512) % ns + 10).reshape(8, 8, 8)  # sub-block 1
    encoded = encode_block(volume)
    n = len(block_table(encoded))
    stream_at = 16 + 8 * n + 2 * 8 + 4 * (1 + ns + 6)
    assert len(encoded) == stream_at + 64 * _bits(ns)
    broken = set_value(encoded, stream_at, _bits(ns), 300, bad)
    for out in output_views((16, 16, 16)).values():
        with pytest.raises(BlockFormatError, match=f"sub-block 1 has a voxel value {bad} past its palette"):
            decode_block_into(broken, None, out)


def _bits(ns: int) -> int:
    return int(ns - 1).bit_length()


def test_oversized_palette_and_truncated_streams() -> None:
    volume = volume_with_palettes([2, 3, 9], seed=1, edge=16)
    encoded = encode_block(volume)
    n = len(block_table(encoded))
    too_many = corrupt(encoded, 16 + 8 * n + 2 * 3, struct.pack("<H", 513))
    with pytest.raises(BlockFormatError, match="truncated"):  # 513 palette entries run past the block
        decode_block(too_many)
    padded = too_many[: 16 + 8 * n + 16] + b"\0" * (4 * 600) + too_many[16 + 8 * n + 16 :]
    with pytest.raises(BlockFormatError, match="sub-block 3 has a 513-entry palette, more than its 512 voxels can use"):
        decode_block(padded)
    for cut in (len(encoded) - 1, len(encoded) - 64, 16 + 8 * n + 4):
        for out in output_views((16, 16, 16)).values():
            with pytest.raises(BlockFormatError, match="truncated"):
                decode_block_into(encoded[:cut], None, out)
