"""The DVID block codec against the real Go-written vectors in ../shared/data/dvid."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from connectome_assets.volumes.block_codec import BlockFormatError, block_table, decode_block, encode_block


def raw_volume(dvid: Path, name: str) -> np.ndarray:
    return np.frombuffer(gzip.open(dvid / f"{name}.dat.gz").read(), dtype="<u8").reshape(64, 64, 64)


@pytest.fixture(scope="module")
def dvid(shared_data: Path) -> Path:
    return shared_data / "dvid"


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
