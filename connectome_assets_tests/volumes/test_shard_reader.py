"""The export-shards reader on the real Go-written male CNS s1 shard."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from connectome_assets.volumes.block_codec import block_table
from connectome_assets.volumes.shard_reader import DvidShardReader, ShardFormatError

STEM = "30720_24576_28672"


@pytest.fixture(scope="module")
def shard(shared_data: Path) -> Path:
    return shared_data / "dvid" / f"{STEM}.arrow"


@pytest.mark.parametrize("index", ["-newformat.csv", "-offsets.csv", ".csv"])
def test_every_index_format_finds_the_same_258_chunks(shard: Path, index: str) -> None:
    reader = DvidShardReader(shard, shard.with_name(STEM + index))
    assert len(reader) == 258
    first = reader.read((509, 413, 469))
    assert first.labels.tolist() == first.supervoxels.tolist() == [0, 1497920602]
    assert first.uncompressed_size == 3_648 and len(first.compressed_block) == 155
    assert np.count_nonzero(reader.decode((509, 413, 469)) == 1497920602) == 3_181


def test_all_chunks_decode_within_their_tables(shard: Path) -> None:
    reader = DvidShardReader(shard, shard.with_name(STEM + "-newformat.csv"))
    nonzero = 0
    for coordinate in reader.chunks:
        record = reader.read(coordinate)
        labels = reader.decode(coordinate)
        supervoxels = reader.decode(coordinate, supervoxels=True)
        assert set(np.unique(labels).tolist()) <= set(record.labels.tolist())
        assert set(np.unique(supervoxels).tolist()) <= set(record.supervoxels.tolist())
        nonzero += int(np.count_nonzero(labels))
    assert nonzero == 34_409_561


def test_supervoxels_column_is_the_block_table(shard: Path) -> None:
    import zstandard

    reader = DvidShardReader(shard, shard.with_name(STEM + "-newformat.csv"))
    for coordinate in reader.chunks[:20]:
        record = reader.read(coordinate)
        block = zstandard.ZstdDecompressor().decompress(record.compressed_block)
        assert block_table(block).tolist() == record.supervoxels.tolist()


def test_schema_size_zero_quirk(shard: Path, tmp_path: Path) -> None:
    """Go Arrow writes the schema lazily: the first row then starts at byte 0 and covers it."""
    lines = shard.with_name(STEM + "-newformat.csv").read_text().splitlines()
    x, y, z, offset, size, batch = lines[2].split(",")
    lines[0] = "# schema_size=0"
    lines[2] = ",".join([x, y, z, "0", str(int(offset) + int(size)), batch])
    index = tmp_path / "quirk.csv"
    index.write_text("\n".join(lines) + "\n")
    reader = DvidShardReader(shard, index)
    assert np.array_equal(reader.decode((int(x), int(y), int(z))), DvidShardReader(shard, shard.with_name(STEM + ".csv")).decode((int(x), int(y), int(z))))


def test_bad_shards_are_clear_errors(shard: Path, tmp_path: Path) -> None:
    index = shard.with_name(STEM + "-newformat.csv")
    truncated = tmp_path / f"{STEM}.arrow"
    truncated.write_bytes(shard.read_bytes()[: 600_000])
    reader = DvidShardReader(truncated, index)
    last = reader.chunks[-1]
    with pytest.raises(ShardFormatError, match=rf"{STEM}.arrow: chunk .* cannot be read; the file may be truncated"):
        reader.read(last)

    swapped = tmp_path / "swapped.csv"
    lines = index.read_text().splitlines()
    a, b = lines[2].split(","), lines[3].split(",")
    lines[2], lines[3] = ",".join(b[:3] + a[3:]), ",".join(a[:3] + b[3:])
    swapped.write_text("\n".join(lines) + "\n")
    with pytest.raises(ShardFormatError, match="the CSV index disagrees with the Arrow file"):
        DvidShardReader(shard, swapped).read(tuple(int(v) for v in b[:3]))

    not_arrow = tmp_path / "x.arrow"
    not_arrow.write_bytes(b"PAR1" + b"\0" * 64)
    with pytest.raises(ShardFormatError, match="not an Arrow IPC stream"):
        DvidShardReader(not_arrow, index)

    with pytest.raises(ShardFormatError, match="is not in the index"):
        DvidShardReader(shard, index).read((0, 0, 0))


def test_corrupt_zstd_frame_names_the_chunk(shard: Path, tmp_path: Path) -> None:
    data = bytearray(shard.read_bytes())
    reader = DvidShardReader(shard, shard.with_name(STEM + "-newformat.csv"))
    record = reader.read((509, 413, 469))
    at = bytes(data).find(record.compressed_block)
    data[at + 20 : at + 40] = b"\xff" * 20
    broken = tmp_path / f"{STEM}.arrow"
    broken.write_bytes(bytes(data))
    shutil.copy(shard.with_name(STEM + "-newformat.csv"), tmp_path / f"{STEM}.csv")
    with pytest.raises(ShardFormatError, match=r"30720_24576_28672.arrow: chunk \(509, 413, 469\): the zstd frame does not decode"):
        DvidShardReader(broken).decode((509, 413, 469))
