"""The transcode writer (DVID blocks -> compressed_segmentation chunk bytes -> the sharded kvstore)
against the decoded blocks, read back through tensorstore and cloud-volume, and against the array
writer, chunk for chunk: the real male CNS shard (labels and supervoxels, raw and gzip data), a
volume whose edge chunks are partial, gs:// on fake-gcs-server, and a corrupt block."""

from __future__ import annotations

import copy
import dataclasses
import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import tensorstore as ts

from connectome_assets.volumes import WRITERS
from connectome_assets.volumes.precomputed import Scale, VolumeSpecError, destination_url, info_from_spec, kvstore_spec, open_scale, scales_of, shard_files, write_info
from connectome_assets.volumes.s0 import ShardWriteResult, write_dvid_shard
from connectome_assets.volumes.shard_reader import DvidShardReader, ShardFormatError
from connectome_assets.volumes.sharding import shard_chunk_data
from connectome_assets.volumes.synthetic import write_export_scale, write_shard_files
from connectome_assets_tests.volumes.test_s0 import STEM, labelled_volume, small_spec

COUNTS = ("chunks", "written", "all_zero", "outside", "voxels")


def with_data_encoding(info: dict, encoding: str) -> dict:
    info = copy.deepcopy(info)
    for scale in info["scales"]:
        scale["sharding"]["data_encoding"] = encoding
    return info


def shard_bytes(dest_url: str, scale: Scale, name: str) -> bytes:
    """A shard file's bytes from the destination (file:// or gs://)."""
    found = ts.KvStore.open(kvstore_spec(dest_url)).result().read(f"{scale.key}/{name}").result()
    assert found.state == "value", f"{dest_url}{scale.key}/{name} is missing"
    return bytes(found.value)


def cloud_volume_read(dest_url: str, mip: int, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    from cloudvolume import CloudVolume

    volume = CloudVolume(f"precomputed://{dest_url}", mip=mip, fill_missing=True, progress=False)
    return np.asarray(volume[low[0] : high[0], low[1] : high[1], low[2] : high[2]][..., 0])


def assert_same_chunks(dest_a: str, dest_b: str, scale: Scale, name: str) -> None:
    """Two writes of one output shard hold the same chunk ids, each with the same data bytes."""
    a = shard_chunk_data(shard_bytes(dest_a, scale, name), scale.sharding)
    b = shard_chunk_data(shard_bytes(dest_b, scale, name), scale.sharding)
    assert sorted(a) == sorted(b)
    different = [chunk_id for chunk_id in a if a[chunk_id] != b[chunk_id]]
    assert not different, f"{len(different)} of {len(a)} chunks differ, e.g. chunk id {different[0]}"


@dataclass
class RealBuild:
    dest: str
    scale: Scale
    result: ShardWriteResult


REAL_CASES = [("labels", "raw"), ("supervoxels", "gzip")]  # the spec's own raw data encoding, and gzip


@pytest.fixture(scope="module")
def real_reader(shared_data: Path) -> DvidShardReader:
    return DvidShardReader(shared_data / "dvid" / f"{STEM}.arrow", shared_data / "dvid" / f"{STEM}-newformat.csv")


@pytest.fixture(scope="module")
def real_builds(shared_data: Path, real_reader: DvidShardReader, tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str, str], RealBuild]:
    """The real 258-block shard as s1 of the male CNS spec, written once by each writer for each case."""
    spec = json.loads((shared_data / "dvid" / "mcns-ng-specs.json").read_text())
    builds = {}
    for mapping, encoding in REAL_CASES:
        info = with_data_encoding(info_from_spec(spec, "mcns-ng-specs.json"), encoding)
        scale = scales_of(info)[1]
        for writer in WRITERS:
            dest = destination_url(str(tmp_path_factory.mktemp(f"{mapping}-{encoding}-{writer}")))
            write_info(dest, info)
            result = write_dvid_shard(real_reader, dest, scale, supervoxels=mapping == "supervoxels", writer=writer)
            builds[mapping, encoding, writer] = RealBuild(dest, scale, result)
    return builds


@pytest.mark.parametrize(("mapping", "encoding"), REAL_CASES)
def test_real_shard_transcoded_reads_back_equal_to_the_decoded_blocks(real_builds, real_reader: DvidShardReader, mapping: str, encoding: str) -> None:
    build = real_builds[mapping, encoding, "transcode"]
    assert (build.result.writer, build.result.chunks, build.result.written, build.result.output_file) == ("transcode", 258, 258, "0fe9.shard")
    assert shard_files(build.dest, build.scale.key) == {"0fe9.shard"}
    supervoxels = mapping == "supervoxels"
    chunks = np.array(real_reader.chunks)
    store = open_scale(build.dest, 1)
    # One z layer of chunks at a time (the shard's bounding box is ~0.9 GB of uint64), empty chunks included.
    for z in range(chunks[:, 2].min(), chunks[:, 2].max() + 1):
        layer = chunks[chunks[:, 2] == z]
        low, high = layer.min(axis=0) * 64, (layer.max(axis=0) + 1) * 64
        expected = np.zeros(tuple(high - low), np.uint64)
        for chunk in layer.tolist():
            at = np.array(chunk) * 64 - low
            expected[at[0] : at[0] + 64, at[1] : at[1] + 64, :] = real_reader.decode(tuple(chunk), supervoxels=supervoxels).transpose(2, 1, 0)
        assert np.array_equal(store[low[0] : high[0], low[1] : high[1], low[2] : high[2], 0].read().result(), expected), f"z layer {z} (tensorstore)"
        assert np.array_equal(cloud_volume_read(build.dest, 1, low, high), expected), f"z layer {z} (cloud-volume)"


@pytest.mark.parametrize(("mapping", "encoding"), REAL_CASES)
def test_real_shard_transcoded_equals_the_array_writer_chunk_for_chunk(real_builds, mapping: str, encoding: str) -> None:
    transcoded, arrays = real_builds[mapping, encoding, "transcode"], real_builds[mapping, encoding, "array"]
    assert arrays.result.writer == "array"
    assert [getattr(transcoded.result, f) for f in COUNTS] == [getattr(arrays.result, f) for f in COUNTS]
    assert transcoded.result.transcode_seconds > 0 and transcoded.result.decode_seconds == 0
    assert_same_chunks(transcoded.dest, arrays.dest, transcoded.scale, "0fe9.shard")
    if encoding == "gzip":  # the chunks really are gzipped in the file
        data = shard_bytes(transcoded.dest, transcoded.scale, "0fe9.shard")
        assert data.count(b"\x1f\x8b\x08") >= 258


def test_partial_edge_chunks_match_the_array_writer_and_read_back(tmp_path: Path) -> None:
    # DVID exports whole 64³ blocks; the volume ends inside them (x 150, y 129, z 140), and the last
    # x column of blocks lies wholly outside it.
    volume = labelled_volume((160, 130, 200), seed=6)
    volume[:64, :64, 128:150] = 0  # block (2, 0, 0): zero inside the volume, labels beyond its edge
    export = tmp_path / "export"
    write_export_scale(export, info_from_spec(small_spec(size=(200, 130, 160)), "export.json"), 0, volume)
    info = info_from_spec(small_spec(size=(150, 129, 140)), "edge.json")
    scale = scales_of(info)[0]
    results: dict[str, list[ShardWriteResult]] = {}
    for writer in WRITERS:
        dest = destination_url(str(tmp_path / writer))
        write_info(dest, info)
        results[writer] = [write_dvid_shard(DvidShardReader(arrow), dest, scale, writer=writer) for arrow in sorted((export / "s0").glob("*.arrow"))]
    for transcoded, arrays in zip(results["transcode"], results["array"]):
        assert [getattr(transcoded, f) for f in COUNTS] == [getattr(arrays, f) for f in COUNTS]
    assert sum(r.outside for r in results["transcode"]) > 0 and sum(r.all_zero for r in results["transcode"]) >= 1
    dest, array_dest = destination_url(str(tmp_path / "transcode")), destination_url(str(tmp_path / "array"))
    names = shard_files(dest, scale.key)
    assert names == shard_files(array_dest, scale.key) and names
    for name in names:
        assert_same_chunks(dest, array_dest, scale, name)
    expected = volume[:140, :129, :150].transpose(2, 1, 0)
    assert np.array_equal(open_scale(dest, 0)[:, :, :, 0].read().result(), expected)
    assert np.array_equal(cloud_volume_read(dest, 0, np.zeros(3, int), np.array([150, 129, 140])), expected)


def test_transcoded_to_gcs_equals_the_array_writer_on_disk(fake_gcs: str, gcs_bucket, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TENSORSTORE_GCS_HTTP_URL", fake_gcs)
    monkeypatch.setenv("GCE_METADATA_ROOT", "127.0.0.1:9")
    info = info_from_spec(small_spec(size=(180, 130, 150)), "small.json")
    volume = labelled_volume((150, 130, 180), seed=7)
    export = tmp_path / "export"
    write_export_scale(export, info, 0, volume, {int(v): 5 for v in np.unique(volume)[1:20]})
    scale = scales_of(info)[0]
    gcs_dest, file_dest = destination_url(f"gs://{gcs_bucket.name}/volumes/v1"), destination_url(str(tmp_path / "array"))
    for dest, writer in ((gcs_dest, "transcode"), (file_dest, "array")):
        write_info(dest, info)
        for arrow in sorted((export / "s0").glob("*.arrow")):
            write_dvid_shard(DvidShardReader(arrow), dest, scale, writer=writer)
    names = shard_files(gcs_dest, scale.key)
    assert names and names == shard_files(file_dest, scale.key)
    for name in names:
        assert_same_chunks(gcs_dest, file_dest, scale, name)
    assert np.array_equal(open_scale(gcs_dest, 0)[:, :, :, 0].read().result(), open_scale(file_dest, 0)[:, :, :, 0].read().result())


def test_a_corrupt_block_is_named_and_writes_nothing(tmp_path: Path) -> None:
    info = info_from_spec(small_spec(), "small.json")
    export = tmp_path / "export"
    write_export_scale(export, info, 0, labelled_volume((160, 130, 200), seed=8))
    good = sorted((export / "s0").glob("*.arrow"))[0]
    reader = DvidShardReader(good)
    rows = []
    for chunk in reader.chunks:
        record = reader.read(chunk)
        block, _, _ = reader.block(chunk, supervoxels=True)
        rows.append((chunk, block, record.supervoxels, record.labels))
    bad = reader.chunks[-1]  # earlier chunks are staged before it fails
    rows[-1] = (bad, rows[-1][1][:-8], rows[-1][2], rows[-1][3])  # its bit streams cut short (zstd is fine)
    broken = tmp_path / "broken" / good.name
    broken.parent.mkdir()
    write_shard_files(broken.with_suffix(""), rows)
    scale = scales_of(info)[0]
    dest = destination_url(str(tmp_path / "out"))
    write_info(dest, info)
    with pytest.raises(ShardFormatError, match=rf"^{re.escape(str(broken))}: chunk \({bad[0]}, {bad[1]}, {bad[2]}\): block is truncated") as raised:
        write_dvid_shard(DvidShardReader(broken), dest, scale, writer="transcode")
    assert "\n" not in str(raised.value)
    assert shard_files(dest, scale.key) == set()
    # A good shard already there stays as it was when a bad copy of it fails.
    result = write_dvid_shard(reader, dest, scale)
    before = shard_bytes(dest, scale, result.output_file)
    with pytest.raises(ShardFormatError, match="block is truncated"):
        write_dvid_shard(DvidShardReader(broken), dest, scale)
    assert shard_bytes(dest, scale, result.output_file) == before


def test_the_transcode_writer_refuses_a_voxel_offset(tmp_path: Path) -> None:
    info = info_from_spec(small_spec(), "small.json")
    export = tmp_path / "export"
    write_export_scale(export, info, 0, labelled_volume((160, 130, 200), seed=9))
    scale = dataclasses.replace(scales_of(info)[0], voxel_offset=(64, 0, 0))  # chunk ids would count from voxel 64
    dest = destination_url(str(tmp_path / "out"))
    with pytest.raises(VolumeSpecError, match=r"8nm: chunks are written by id from voxel 0, so the scale needs voxel_offset 0, not \[64, 0, 0\]$"):
        write_dvid_shard(DvidShardReader(sorted((export / "s0").glob("*.arrow"))[0]), dest, scale)
