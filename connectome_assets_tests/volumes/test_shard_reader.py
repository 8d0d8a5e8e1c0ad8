"""The export-shards reader on the real Go-written male CNS s1 shard."""

from __future__ import annotations

import shutil
import struct
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from connectome_assets.volumes import shard_reader
from connectome_assets.volumes.block_codec import block_table
from connectome_assets.volumes.shard_reader import EXPECTED_SCHEMA, DvidShardReader, ShardFormatError

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


def test_decode_into_writes_chunks_into_an_xyz_buffer(shard: Path) -> None:
    reader = DvidShardReader(shard, shard.with_name(STEM + "-newformat.csv"))
    chunks = reader.chunks[:12]
    origin = np.min(chunks, axis=0)
    extent = (np.max(chunks, axis=0) - origin + 1) * 64
    volume = np.zeros(tuple(extent), np.uint64)  # x, y, z, as an s0 writer assembles a shard
    for chunk in chunks:
        x, y, z = (np.array(chunk) - origin) * 64
        out = volume[x : x + 64, y : y + 64, z : z + 64].transpose(2, 1, 0)
        assert reader.decode_into(chunk, out) is out
    for chunk in chunks:
        x, y, z = (np.array(chunk) - origin) * 64
        assert np.array_equal(volume[x : x + 64, y : y + 64, z : z + 64], reader.decode(chunk).transpose(2, 1, 0))
    supervoxels = np.empty((64, 64, 64), np.uint64)
    assert np.array_equal(reader.decode_into(chunks[0], supervoxels, supervoxels=True), reader.decode(chunks[0], supervoxels=True))


def test_rows_read_in_place_equal_pyarrows_reading(shard: Path) -> None:
    reader = DvidShardReader(shard, shard.with_name(STEM + "-newformat.csv"))
    seen = 0
    for batch in pa.ipc.open_stream(pa.memory_map(str(shard))):
        for row in batch.to_pylist():
            record = reader.read((row["chunk_x"], row["chunk_y"], row["chunk_z"]))
            assert record.labels.tolist() == row["labels"] and record.supervoxels.tolist() == row["supervoxels"]
            assert record.compressed_block == row["dvid_compressed_block"] and record.uncompressed_size == row["uncompressed_size"]
            seen += 1
    assert seen == len(reader) == 258


def rewrite_shard(shard: Path, directory: Path, chunks: int, **options: object) -> Path:
    """The shard's first rows rewritten by pyarrow (with IPC `options`), and its current-format index."""
    rows = []
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, EXPECTED_SCHEMA, options=pa.ipc.IpcWriteOptions(**options)) as writer:
        schema_size = sink.tell()
        for batch in list(pa.ipc.open_stream(pa.memory_map(str(shard))))[:chunks]:
            start = sink.tell()
            writer.write_batch(pa.record_batch(batch.columns, schema=EXPECTED_SCHEMA))
            rows.append(f"{batch['chunk_x'][0]},{batch['chunk_y'][0]},{batch['chunk_z'][0]},{start},{sink.tell() - start},0")
    arrow = directory / f"{STEM}.arrow"
    arrow.write_bytes(sink.getvalue().to_pybytes())
    arrow.with_suffix(".csv").write_text(f"# schema_size={schema_size}\nx,y,z,offset,size,batch_idx\n" + "\n".join(rows) + "\n")
    return arrow


@pytest.mark.parametrize("compression", [None, "zstd", "lz4"])
def test_pyarrow_written_and_ipc_compressed_shards(shard: Path, tmp_path: Path, compression: str | None) -> None:
    """pyarrow-written batches are read in place; IPC body compression is left to pyarrow."""
    rewritten = rewrite_shard(shard, tmp_path, 20, compression=compression)
    original = DvidShardReader(shard, shard.with_name(STEM + "-newformat.csv"))
    reader = DvidShardReader(rewritten)
    assert len(reader) == 20
    for chunk in reader.chunks:
        assert np.array_equal(reader.decode(chunk), original.decode(chunk))
        assert reader.read(chunk).labels.tolist() == original.read(chunk).labels.tolist()
    data = np.fromfile(rewritten, np.uint8)
    lines = rewritten.with_suffix(".csv").read_text().splitlines()
    assert lines[0] == "# schema_size=0" and lines[2].split(",")[3] == "0"  # pyarrow writes the schema lazily too
    offset = int(lines[3].split(",")[3])
    if compression is None:
        assert shard_reader._parse_batch(data, offset).rows == 1
    else:
        with pytest.raises(shard_reader._Unusual, match="compressed"):
            shard_reader._parse_batch(data, offset)


def test_damaged_batches_are_clear_errors(shard: Path, tmp_path: Path) -> None:
    index = shard.with_name(STEM + "-newformat.csv")
    reader = DvidShardReader(shard, index)
    chunk = reader.chunks[100]
    location = reader._index[chunk]
    data = bytearray(shard.read_bytes())

    cut = tmp_path / f"{STEM}.arrow"  # the file ends inside this chunk's message body
    cut.write_bytes(bytes(data[: location.offset + location.size - 100]))
    where = rf"chunk \({chunk[0]}, {chunk[1]}, {chunk[2]}\) at byte {location.offset}"
    with pytest.raises(ShardFormatError, match=f"{where} cannot be read; the file may be truncated"):
        DvidShardReader(cut, index).decode(chunk)

    block_offsets = shard_reader._parse_batch(np.frombuffer(bytes(data), np.uint8), location.offset).at[7]
    data[block_offsets + 4 : block_offsets + 8] = struct.pack("<i", 1 << 30)
    bad = tmp_path / "bad.arrow"
    bad.write_bytes(bytes(data))
    with pytest.raises(ShardFormatError, match=r"its block offsets \[0, 1073741824\) fall outside the \d+ values stored"):
        DvidShardReader(bad, index).decode(chunk)
