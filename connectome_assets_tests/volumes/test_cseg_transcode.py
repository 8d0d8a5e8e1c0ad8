"""The DVID -> compressed_segmentation transcoder: byte for byte the `compressed-segmentation` package's
encoding of the decoded voxels, and byte for byte what tensorstore stores for the chunk."""

from __future__ import annotations

import gzip
import json
import struct
from pathlib import Path

import numpy as np
import pytest
import tensorstore as ts

from connectome_assets.volumes.block_codec import BlockFormatError, block_table, decode_block, encode_block
from connectome_assets.volumes.cseg_transcode import reference_transcode_chunk, transcode_chunk
from connectome_assets.volumes.precomputed import destination_url, info_from_spec, kvstore_spec, open_scale, scales_of, write_info
from connectome_assets.volumes.sharding import compressed_morton_code, grid_bits
from connectome_assets.volumes.synthetic import multiscale_spec, neurite_volume
from connectome_assets_tests.volumes.test_block_codec import raw_volume, set_value, volume_with_palettes

EDGE_EXTENTS = [(64, 64, 64), (8, 8, 8), (1, 1, 1), (36, 6, 61), (63, 64, 17), (64, 9, 64), (3, 64, 40)]


def assert_same(block: bytes, mapped: np.ndarray | None, extent: tuple[int, int, int] = (64, 64, 64)) -> bytes | None:
    expected = reference_transcode_chunk(block, mapped, extent)
    got = transcode_chunk(block, mapped, extent)
    assert got == expected, f"extent {extent}: {None if got is None else len(got)} bytes, expected {None if expected is None else len(expected)}"
    return got


def many_to_one(table: np.ndarray, bodies: int) -> np.ndarray:
    """Supervoxels merged into a few bodies (0 stays 0), as the `labels` column does."""
    return np.where(table == 0, np.uint64(0), table % np.uint64(bodies) + np.uint64(1))


@pytest.mark.parametrize("mapping", ["supervoxels", "labels", "many to one", "mostly zero"])
def test_every_real_block_equals_the_reference(real_blocks: list, mapping: str) -> None:
    collapsed = 0
    for _, block, labels in real_blocks:
        if mapping == "supervoxels":
            mapped = None
        elif mapping == "labels":
            mapped = labels
        elif mapping == "many to one":
            mapped = many_to_one(labels, 3)
        else:  # most bodies erased: whole sub-blocks and chunks become 0
            mapped = np.where(labels % np.uint64(4) == 0, labels, np.uint64(0))
        got = assert_same(block, mapped)
        collapsed += got is None
    if mapping == "mostly zero":
        assert collapsed  # some chunks lose every label: nothing is stored for them


def test_go_written_block_and_the_raw_samples(dvid: Path) -> None:
    go_block = gzip.open(dvid / "fib19-64x64x64-sample1-block.dat.gz").read()
    table = block_table(go_block)
    for mapped in (None, table, many_to_one(table, 4), many_to_one(table, 1), np.where(table == table[3], np.uint64(0), table)):
        for extent in EDGE_EXTENTS:
            assert_same(go_block, mapped, extent)
    for name in ("fib19-64x64x64-sample1", "fib19-64x64x64-sample2", "cx-64x64x64-sample1", "cx-64x64x64-sample2"):
        block = encode_block(raw_volume(dvid, name))
        assert_same(block, None)
        assert_same(block, many_to_one(block_table(block), 2))


@pytest.mark.parametrize(
    "sizes", [[1], [2], [3], [4], [5, 6, 7, 8], [9, 16], [17, 32], [33, 64], [65, 100, 128], [129, 255, 256], [257, 400, 512], [1, 2, 3, 5, 9, 33, 257, 1, 1, 2]]
)
def test_every_palette_width(sizes: list[int]) -> None:
    """DVID palettes of 1 to 9 bits (cseg tables of 0 to 16 bits), kept, merged many to one, and merged
    down to one or two labels per block."""
    volume = volume_with_palettes(sizes, seed=len(sizes))
    block = encode_block(volume)
    table = block_table(block)
    for mapped in (None, many_to_one(table, 97), many_to_one(table, 5), many_to_one(table, 2), table % np.uint64(2), np.zeros_like(table)):
        assert_same(block, mapped)
    for extent in EDGE_EXTENTS[1:]:
        assert_same(block, None, extent)
        assert_same(block, many_to_one(table, 5), extent)


def test_solid_blocks_and_solid_sub_blocks() -> None:
    solid = struct.pack("<4IQ", 8, 8, 8, 1, 2**40 + 3)
    for extent in EDGE_EXTENTS:
        got = assert_same(solid, None, extent)
        assert got is not None and len(got) == 4 * (1 + 2 * np.prod([-(-e // 8) for e in extent]) + 2)  # one table, shared by every block
    assert transcode_chunk(solid, np.array([0], np.uint64)) is None
    assert transcode_chunk(struct.pack("<4I", 8, 8, 8, 0), None) is None
    assert_same(solid, np.array([7], np.uint64))
    volume = np.zeros((64, 64, 64), np.uint64)
    volume[8:40, :, 16:] = 5  # whole sub-blocks of one label beside whole sub-blocks of 0
    volume[60:, 60:, 60:] = 6
    block = encode_block(volume)
    for extent in EDGE_EXTENTS:
        assert_same(block, None, extent)
    assert transcode_chunk(block, None, (16, 64, 8)) is None  # the clipped chunk is all 0


def rewritten(block: bytes, change) -> bytes:
    """The block with its sub-block palettes and streams rewritten by change(sub_block, palette,
    positions) -> (palette, positions) (palette: table indices; positions: 512 palette positions)."""
    gx, gy, gz, n = struct.unpack_from("<4I", block)
    nsb = gx * gy * gz
    counts = np.frombuffer(block, "<u2", nsb, 16 + 8 * n)
    cursor = 16 + 8 * n + 2 * nsb
    palettes = []
    for ns in counts.tolist():
        palettes.append(np.frombuffer(block, "<u4", ns, cursor))
        cursor += 4 * ns
    new_counts, new_palettes, streams = [], [], []
    for sb, palette in enumerate(palettes):
        bits = int(len(palette) - 1).bit_length() if len(palette) > 1 else 0
        positions = np.zeros(512, np.int64)
        if bits:
            positions = np.unpackbits(np.frombuffer(block, np.uint8, 64 * bits, cursor)).reshape(512, bits) @ (1 << np.arange(bits - 1, -1, -1))
            cursor += 64 * bits
        palette, positions = change(sb, palette.copy(), positions)
        bits = int(len(palette) - 1).bit_length() if len(palette) > 1 else 0
        new_counts.append(len(palette))
        new_palettes.append(np.asarray(palette, "<u4"))
        if bits:
            streams.append(np.packbits(((positions[:, None] >> np.arange(bits - 1, -1, -1)) & 1).astype(np.uint8).ravel()).tobytes())
    assert cursor == len(block)
    return block[: 16 + 8 * n] + np.array(new_counts, "<u2").tobytes() + np.concatenate(new_palettes).tobytes() + b"".join(streams)


def test_duplicate_table_entries_unused_palette_entries_and_uninitialised_sub_blocks() -> None:
    """What DVID's block surgery (merges, replaces) leaves behind and its own encoder never writes."""
    volume = volume_with_palettes([2, 3, 4, 5, 9, 17, 1], seed=7)
    block = encode_block(volume)
    table = block_table(block)

    def unused_entries(sb: int, palette: np.ndarray, positions: np.ndarray):
        if len(palette) >= 3 and sb % 3 == 0:  # no voxel uses position 1 (sorting anywhere in the table) any more
            positions = np.where(positions == 1, 0, positions)
        elif len(palette) >= 2 and sb % 3 == 1:  # or uses only the last position, under a palette of two or more
            positions = np.full(512, len(palette) - 1)
        return palette, positions

    def uninitialised(sb: int, palette: np.ndarray, positions: np.ndarray):
        return (palette[:0], positions) if len(palette) == 1 and sb % 2 else (palette, positions)

    def duplicate_palette_entries(sb: int, palette: np.ndarray, positions: np.ndarray):
        if len(palette) >= 2:
            palette[-1] = palette[0]  # two positions name the same table entry
        return palette, positions

    for change in (unused_entries, uninitialised, duplicate_palette_entries):
        surgery = rewritten(block, change)
        assert not np.array_equal(decode_block(surgery), volume)
        for mapped in (None, many_to_one(table, 7)):
            for extent in ((64, 64, 64), (36, 6, 61), (9, 64, 64)):
                assert_same(surgery, mapped, extent)
    # Duplicate table entries: one supervoxel id twice in the table, each copy used.
    twice = np.frombuffer(block, np.uint8).copy()
    twice[16 + 8 * 5 : 16 + 8 * 6] = np.frombuffer(struct.pack("<Q", int(table[9])), np.uint8)
    duplicated = twice.tobytes()
    assert np.sum(block_table(duplicated) == table[9]) == 2
    for extent in EDGE_EXTENTS:
        assert_same(duplicated, None, extent)


def test_identical_tables_are_written_once_and_shared() -> None:
    """Neuroglancer's rule: a block points at the first earlier copy of exactly its sorted table."""
    volume = np.zeros((64, 64, 64), np.uint64)
    rng = np.random.default_rng(5)
    for sub_block in range(512):
        z, y, x = sub_block // 64, sub_block // 8 % 8, sub_block % 8
        labels = [(10, 20), (20, 10), (10, 30), (10,), (30, 20, 10)][sub_block % 5]  # the same tables in other palette orders
        volume[8 * z : 8 * z + 8, 8 * y : 8 * y + 8, 8 * x : 8 * x + 8] = rng.choice(labels, (8, 8, 8)) if len(labels) > 1 else labels[0]
    got = assert_same(encode_block(volume), None)
    words = np.frombuffer(got, "<u4")
    assert len({int(w) & 0xFFFFFF for w in words[1:1025:2]}) == 4  # 4 distinct tables for 512 blocks


def test_corrupt_blocks_are_one_sentence(dvid: Path) -> None:
    go_block = gzip.open(dvid / "fib19-64x64x64-sample1-block.dat.gz").read()
    n = len(block_table(go_block))
    with pytest.raises(BlockFormatError, match=r"^block is truncated: \d+ bytes needed, 11256 present$"):
        transcode_chunk(go_block[: len(go_block) // 2], None)
    with pytest.raises(BlockFormatError, match="^block has 3 trailing bytes after its last sub-block$"):
        transcode_chunk(go_block + b"\0\0\0", None)
    with pytest.raises(BlockFormatError, match="past the 18-label table"):
        at = 16 + 8 * n + 2 * 512
        transcode_chunk(go_block[:at] + struct.pack("<I", 99) + go_block[at + 4 :], None)
    with pytest.raises(BlockFormatError, match="label mapping has 2 entries for a 18-label block table"):
        transcode_chunk(go_block, block_table(go_block)[:2])
    with pytest.raises(BlockFormatError, match="shorter than its 16-byte header"):
        transcode_chunk(b"\x08\0\0\0", None)
    with pytest.raises(BlockFormatError, match="solid block has 8 unexpected trailing bytes"):
        transcode_chunk(struct.pack("<4IQQ", 8, 8, 8, 1, 5, 5), None)
    for extent in ((65, 64, 64), (64, 0, 64)):
        with pytest.raises(BlockFormatError, match="does not fit the block's 64x64x64"):
            transcode_chunk(go_block, None, extent)


@pytest.mark.parametrize("ns, bad", [(3, 3), (5, 7), (6, 6), (9, 15), (33, 60), (100, 127), (257, 300)])
@pytest.mark.parametrize("extent", [(64, 64, 64), (16, 16, 16), (12, 64, 64), (8, 64, 64)])
def test_a_voxel_past_its_palette_is_an_error_inside_the_extent_or_not(ns: int, bad: int, extent: tuple[int, int, int]) -> None:
    """As the decoder says it (so the transcode and array paths fail on the same blocks)."""
    volume = np.ones((64, 64, 64), np.uint64)
    volume[:8, :8, 8:16] = (np.arange(512) % ns + 10).reshape(8, 8, 8)  # sub-block 1
    block = encode_block(volume)
    n = len(block_table(block))
    stream_at = 16 + 8 * n + 2 * 512 + 4 * (1 + ns + 510)
    bits = int(ns - 1).bit_length()
    assert len(block) == stream_at + 64 * bits
    broken = set_value(block, stream_at, bits, 300, bad)  # voxel (4, 5, 4) of sub-block 1, x = 12
    with pytest.raises(BlockFormatError, match=f"^sub-block 1 has a voxel value {bad} past its palette$"):
        decode_block(broken)
    with pytest.raises(BlockFormatError, match=f"^sub-block 1 has a voxel value {bad} past its palette$"):
        transcode_chunk(broken, None, extent)


def stored_chunks(dest: str, scale_key: str, sharding: dict, chunks: list[tuple[int, int, int]], bits: tuple[int, int, int]) -> dict:
    """The chunk payloads tensorstore stored, read through its own `neuroglancer_uint64_sharded`
    kvstore (which undoes the data encoding): chunk -> bytes, None where nothing was stored."""
    store = ts.KvStore.open({"driver": "neuroglancer_uint64_sharded", "base": {**kvstore_spec(dest), "path": kvstore_spec(dest)["path"] + scale_key + "/"}, "metadata": sharding}).result()
    found = {}
    for chunk in chunks:
        read = store.read(struct.pack(">Q", compressed_morton_code(chunk, bits))).result()
        found[chunk] = bytes(read.value) if read.state == "value" else None
    return found


def write_through_tensorstore(dest: str, scale_index: int, blocks: list[tuple[tuple[int, int, int], bytes, np.ndarray | None]]) -> None:
    """The array path: decoded, clipped voxels written through neuroglancer_precomputed, one transaction."""
    store = open_scale(dest, scale_index)
    size = np.array(store.domain.exclusive_max[:3])
    txn = ts.Transaction()
    for chunk, block, mapped in blocks:
        start = np.array(chunk) * 64
        end = np.minimum(start + 64, size)
        voxels = decode_block(block, mapped).transpose(2, 1, 0)[: end[0] - start[0], : end[1] - start[1], : end[2] - start[2]]
        store.with_transaction(txn)[start[0] : end[0], start[1] : end[1], start[2] : end[2], 0].write(voxels).result()
    txn.commit_async().result()


def test_the_real_shard_equals_what_tensorstore_stores(dvid: Path, real_blocks: list, tmp_path: Path) -> None:
    info = info_from_spec(json.loads((dvid / "mcns-ng-specs.json").read_text()), "mcns-ng-specs.json")
    dest = destination_url(str(tmp_path / "out"))
    write_info(dest, info)
    scale = scales_of(info)[1]
    write_through_tensorstore(dest, 1, [(chunk, block, labels) for chunk, block, labels in real_blocks])
    stored = stored_chunks(dest, scale.key, info["scales"][1]["sharding"], [chunk for chunk, _, _ in real_blocks], grid_bits(scale.grid))
    for chunk, block, labels in real_blocks:
        assert stored[chunk] is not None and transcode_chunk(block, labels) == stored[chunk], chunk


def test_edge_chunks_equal_what_tensorstore_stores(tmp_path: Path) -> None:
    """A volume of 200 x 130 x 75 voxels (x, y, z): chunks clipped at 8, 2 and 11 voxels, i.e. at an
    8-voxel boundary and inside cseg blocks; some clipped chunks hold only zeros inside the volume."""
    size = (200, 130, 75)
    info = info_from_spec(multiscale_spec(size, 1), "edges.json")
    dest = destination_url(str(tmp_path / "out"))
    write_info(dest, info)
    scale = scales_of(info)[0]
    volume = neurite_volume((128, 192, 256), neurites=60, seed=4)  # z, y, x: every block holds labels beyond the edge too
    volume[75:, :, :] = 0
    volume[75:, 100:, 100:] = 9  # labels outside the volume only
    volume[:, :, 192:200] = 0  # the x-edge chunks' 8 voxels inside the volume are 0 where y < 128
    volume[:75, 128:130, 192:200] = 7
    bodies = {int(v): int(v) % 11 + 1 for v in np.unique(volume) if v}
    blocks = []
    for cz in range(2):
        for cy in range(3):
            for cx in range(4):
                voxels = volume[64 * cz : 64 * cz + 64, 64 * cy : 64 * cy + 64, 64 * cx : 64 * cx + 64]
                block = encode_block(voxels)
                mapped = np.array([bodies.get(int(v), 0) for v in block_table(block)], np.uint64)
                blocks.append(((cx, cy, cz), block, mapped))
    write_through_tensorstore(dest, 0, blocks)
    stored = stored_chunks(dest, scale.key, info["scales"][0]["sharding"], [chunk for chunk, _, _ in blocks], grid_bits(scale.grid))
    empty = 0
    for chunk, block, mapped in blocks:
        extent = tuple(min(64, s - 64 * c) for s, c in zip(size, chunk))
        assert transcode_chunk(block, mapped, extent) == stored[chunk], (chunk, extent)
        empty += stored[chunk] is None
    assert empty >= 2  # clipped chunks whose voxels inside the volume are all 0: tensorstore stores nothing
    assert np.array_equal(
        open_scale(dest, 0)[:, :, :, 0].read().result(), np.vectorize(lambda v: bodies.get(int(v), 0), otypes=[np.uint64])(volume[:75, :130, :200]).transpose(2, 1, 0)
    )


def test_blocks_of_other_grids() -> None:
    """DVID blocks need not be 64³ (export-shards' are): a 24 x 16 x 32 block (x, y, z), whole and clipped."""
    volume = volume_with_palettes([1, 2, 3, 9, 5], seed=2, edge=32)[:, :16, :24]
    block = encode_block(volume)
    for extent in ((24, 16, 32), (20, 9, 30), (1, 16, 8)):
        assert_same(block, None, extent)
        assert_same(block, many_to_one(block_table(block), 3), extent)
    with pytest.raises(BlockFormatError, match="does not fit the block's 24x16x32"):
        transcode_chunk(block, None)
