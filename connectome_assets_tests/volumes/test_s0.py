"""The s0 writer end to end: DVID export shards -> tensorstore -> neuroglancer precomputed, read back."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import tensorstore as ts

from connectome_assets.volumes import WRITERS
from connectome_assets.volumes.precomputed import (
    VolumeSpecError,
    destination_url,
    info_from_spec,
    kvstore_spec,
    open_scale,
    scales_of,
    shard_files,
    write_info,
)
from connectome_assets.volumes.s0 import ShardMappingError, expected_output_shard, write_dvid_shard
from connectome_assets.volumes.shard_reader import DvidShardReader, ShardFormatError
from connectome_assets.volumes.sharding import (
    ShardingSpec,
    chunk_grid,
    compressed_morton_code,
    grid_bits,
    shard_and_minishard,
    shard_chunk_ids,
    shard_file_name,
)
from connectome_assets.volumes.synthetic import multiscale_spec, write_export_scale

STEM = "30720_24576_28672"


def small_spec(size=(200, 130, 160), z_chunk=64, scales=2) -> dict:
    return multiscale_spec(size, scales, z_chunk=z_chunk)


def labelled_volume(shape_zyx: tuple[int, int, int], seed: int = 0) -> np.ndarray:
    """Blocky supervoxels with a zero region, ids above 2**32."""
    rng = np.random.default_rng(seed)
    z, y, x = np.indices(shape_zyx)
    volume = (2**40 + (z // 9) * 10_000 + (y // 13) * 100 + x // 17).astype(np.uint64)
    volume[rng.random(shape_zyx) < 0.001] = 7
    volume[:, :, :20] = 0
    return volume


@pytest.fixture
def real_export(shared_data: Path, tmp_path: Path) -> Path:
    """The real male CNS s1 shard laid out as an export directory (symlinks, nothing copied)."""
    export = tmp_path / "export"
    (export / "s1").mkdir(parents=True)
    os.symlink(shared_data / "dvid" / f"{STEM}.arrow", export / "s1" / f"{STEM}.arrow")
    os.symlink(shared_data / "dvid" / f"{STEM}-newformat.csv", export / "s1" / f"{STEM}.csv")
    os.symlink(shared_data / "dvid" / "mcns-ng-specs.json", export / "mcns-ng-specs.json")
    return export


def test_real_shard_reads_back_through_cloud_volume_equal_to_the_decoded_blocks(real_export: Path, tmp_path: Path) -> None:
    from cloudvolume import CloudVolume

    info = info_from_spec(json.loads((real_export / "mcns-ng-specs.json").read_text()), "mcns-ng-specs.json")
    dest = destination_url(str(tmp_path / "out"))
    write_info(dest, info)
    scale = scales_of(info)[1]
    reader = DvidShardReader(real_export / "s1" / f"{STEM}.arrow")
    result = write_dvid_shard(reader, dest, scale)
    assert (result.chunks, result.written, result.output_file) == (258, 258, "0fe9.shard")  # NG shard 4073
    assert shard_files(dest, scale.key) == {"0fe9.shard"}
    chunks = np.array(reader.chunks)
    low, high = chunks.min(axis=0) * 64, (chunks.max(axis=0) + 1) * 64
    expected = np.zeros(tuple(high - low), np.uint64)
    for chunk in reader.chunks:
        at = np.array(chunk) * 64 - low
        expected[at[0] : at[0] + 64, at[1] : at[1] + 64, at[2] : at[2] + 64] = reader.decode(chunk).transpose(2, 1, 0)
    volume = CloudVolume(dest.replace("file://", "precomputed://file://"), mip=1, fill_missing=True, progress=False)
    got = volume[low[0] : high[0], low[1] : high[1], low[2] : high[2]][..., 0]
    assert np.array_equal(np.asarray(got), expected)
    # The shard file holds exactly the 258 chunks, under the ids our sharding math gives them.
    data = (tmp_path / "out" / scale.key / "0fe9.shard").read_bytes()
    ids = {compressed_morton_code(c, grid_bits(scale.grid)) for c in reader.chunks}
    assert set(shard_chunk_ids(data, scale.sharding)) == ids


@pytest.mark.parametrize(
    "sharding",
    [
        {"preshift_bits": 1, "minishard_bits": 2, "shard_bits": 3, "hash": "identity", "minishard_index_encoding": "gzip"},
        {"preshift_bits": 0, "minishard_bits": 3, "shard_bits": 2, "hash": "murmurhash3_x86_128", "minishard_index_encoding": "raw"},
        {"preshift_bits": 2, "minishard_bits": 1, "shard_bits": 0, "hash": "identity", "minishard_index_encoding": "gzip"},
    ],
)
def test_sharding_math_matches_the_shard_files_tensorstore_writes(sharding: dict, tmp_path: Path) -> None:
    size = (64 * 5, 64 * 3, 64 * 6)
    spec = {"@type": "neuroglancer_uint64_sharded_v1", "data_encoding": "raw", **sharding}
    store = ts.open(
        {
            "driver": "neuroglancer_precomputed",
            "kvstore": {"driver": "file", "path": str(tmp_path)},
            "multiscale_metadata": {"type": "segmentation", "data_type": "uint64", "num_channels": 1},
            "scale_metadata": {"size": list(size), "chunk_size": [64, 64, 64], "encoding": "compressed_segmentation", "resolution": [8, 8, 8], "sharding": spec},
        },
        create=True,
    ).result()
    rng = np.random.default_rng(3)
    grid = chunk_grid(size, (64, 64, 64))
    written = [tuple(int(v) for v in c) for c in {tuple(c) for c in rng.integers(0, grid, size=(25, 3)).tolist()}]
    with ts.Transaction() as txn:
        for i, (cx, cy, cz) in enumerate(written):
            store.with_transaction(txn)[cx * 64 : cx * 64 + 64, cy * 64 : cy * 64 + 64, cz * 64 : cz * 64 + 64, 0].write(np.full((64, 64, 64), i + 1, np.uint64)).result()
    parsed = ShardingSpec.from_info(spec)
    expected: dict[str, set[int]] = {}
    for chunk in written:
        chunk_id = compressed_morton_code(chunk, grid_bits(grid))
        shard, _ = shard_and_minishard(chunk_id, parsed)
        expected.setdefault(shard_file_name(shard, parsed.shard_bits), set()).add(chunk_id)
    key = json.loads((tmp_path / "info").read_text())["scales"][0]["key"]
    files = {p.name: p for p in (tmp_path / key).glob("*.shard")}
    assert set(files) == set(expected)
    for name, path in files.items():
        assert set(shard_chunk_ids(path.read_bytes(), parsed)) == expected[name]


def test_synthetic_export_labels_supervoxels_and_clipping(tmp_path: Path) -> None:
    info = info_from_spec(small_spec(), "small.json")
    volume = labelled_volume((160, 130, 200))
    labels = {int(v): 99 for v in np.unique(volume)[1:10]}  # several supervoxels -> one body
    export = tmp_path / "export"
    files = write_export_scale(export, info, 0, volume, labels)
    assert files and all(p.exists() for p in files)
    for supervoxels in (False, True):
        dest = destination_url(str(tmp_path / f"out-{supervoxels}"))
        write_info(dest, info)
        scale = scales_of(info)[0]
        for arrow in sorted((export / "s0").glob("*.arrow")):
            write_dvid_shard(DvidShardReader(arrow), dest, scale, supervoxels=supervoxels)
        got = open_scale(dest, 0)[:, :, :, 0].read().result()
        expected = volume if supervoxels else np.vectorize(lambda v: labels.get(int(v), int(v)), otypes=[np.uint64])(volume)
        assert np.array_equal(got, expected.transpose(2, 1, 0))  # x, y, z; blocks past the size clipped


def test_z_compress_keeps_every_second_slice(tmp_path: Path) -> None:
    doubled = labelled_volume((128, 70, 90), seed=1)
    source = info_from_spec(small_spec(size=(90, 70, 128)), "zdoubled.json")
    export = tmp_path / "export"
    write_export_scale(export, source, 0, doubled)
    native = info_from_spec(small_spec(size=(90, 70, 64), z_chunk=32), "native.json", z_compress=1)
    dest = destination_url(str(tmp_path / "out"))
    write_info(dest, native)
    for arrow in sorted((export / "s0").glob("*.arrow")):
        write_dvid_shard(DvidShardReader(arrow), dest, scales_of(native)[0], z_compress=1)
    got = open_scale(dest, 0)[:, :, :, 0].read().result()
    assert np.array_equal(got, doubled[::2].transpose(2, 1, 0))


def test_output_to_gcs(fake_gcs: str, gcs_bucket, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TENSORSTORE_GCS_HTTP_URL", fake_gcs)
    monkeypatch.setenv("GCE_METADATA_ROOT", "127.0.0.1:9")
    info = info_from_spec(small_spec(), "small.json")
    volume = labelled_volume((160, 130, 200), seed=2)
    export = tmp_path / "export"
    write_export_scale(export, info, 0, volume)
    dest = destination_url(f"gs://{gcs_bucket.name}/volumes/v1")
    write_info(dest, info)
    for arrow in sorted((export / "s0").glob("*.arrow")):
        write_dvid_shard(DvidShardReader(arrow), dest, scales_of(info)[0])
    assert np.array_equal(open_scale(dest, 0)[:, :, :, 0].read().result(), volume.transpose(2, 1, 0))
    key = scales_of(info)[0].key
    assert shard_files(dest, key) and all(name.endswith(".shard") for name in shard_files(dest, key))
    assert kvstore_spec(dest)["bucket"] == gcs_bucket.name


@pytest.mark.parametrize("writer", WRITERS)
def test_bad_input_is_named_and_writes_nothing(writer: str, tmp_path: Path) -> None:
    spec = small_spec()
    spec["scales"][1]["chunk_sizes"] = [[32, 32, 32]]
    with pytest.raises(VolumeSpecError, match=r"bad\.json: scale 1 \(16nm\) has chunk sizes \[\[32, 32, 32\]\], expected \[\[64, 64, 64\]\]"):
        info_from_spec(spec, "bad.json")
    spec = small_spec()
    spec["scales"][0]["compressed_segmentation_block_size"] = [16, 16, 16]
    with pytest.raises(VolumeSpecError, match=r"bad\.json: scale 0 \(8nm\) has compressed_segmentation blocks of \[16, 16, 16\], expected \[8, 8, 8\]"):
        info_from_spec(spec, "bad.json")
    with pytest.raises(VolumeSpecError, match=r"bad\.json: z_compress 63 leaves s0 chunks 1 slice deep; at most 31"):
        info_from_spec(small_spec(z_chunk=1), "bad.json", z_compress=63)
    info = info_from_spec(small_spec(), "small.json")
    export = tmp_path / "export"
    write_export_scale(export, info, 0, labelled_volume((160, 130, 200)))
    arrow = sorted((export / "s0").glob("*.arrow"))[0]
    # Corrupt the last block's compressed bytes: decoding fails after earlier chunks were staged.
    data = bytearray(arrow.read_bytes())
    data[-200:-150] = b"\xff" * 50
    broken = tmp_path / "broken" / arrow.name
    broken.parent.mkdir()
    broken.write_bytes(bytes(data))
    broken.with_suffix(".csv").write_text(arrow.with_suffix(".csv").read_text())
    dest = destination_url(str(tmp_path / "out"))
    write_info(dest, info)
    scale = scales_of(info)[0]
    with pytest.raises(ShardFormatError, match=rf"{arrow.name}: chunk \(\d+, \d+, \d+\)"):
        write_dvid_shard(DvidShardReader(broken), dest, scale, writer=writer)
    assert shard_files(dest, scale.key) == set()  # the transaction was never committed
    result = write_dvid_shard(DvidShardReader(arrow), dest, scale, writer=writer)  # the rerun finishes the job
    assert shard_files(dest, scale.key) == {result.output_file}
    # A file whose name promises another output shard than its chunks belong to.
    misnamed = tmp_path / "misnamed" / "0_0_0.arrow"
    other = sorted((export / "s0").glob("*.arrow"))[-1]
    assert expected_output_shard(other, scale) != expected_output_shard(misnamed, scale)
    misnamed.parent.mkdir()
    misnamed.write_bytes(other.read_bytes())
    misnamed.with_suffix(".csv").write_text(other.with_suffix(".csv").read_text())
    with pytest.raises(ShardMappingError, match="0_0_0.arrow: chunk"):
        write_dvid_shard(DvidShardReader(misnamed), dest, scale, writer=writer)
