"""Plan, run and verify scales: s0 from a DVID export, then 2×2×2 mode downres scales."""

from __future__ import annotations

import copy
import struct
from pathlib import Path

import numpy as np
import pytest
import tensorstore as ts

from connectome_assets.volumes.cseg_downsample import CsegChunkError
from connectome_assets.volumes.plan import (
    Manifest,
    PlanError,
    downres_source_bytes,
    plan_downres_scale,
    plan_dvid_scale,
    shard_index,
    shard_memory,
    tier_table,
)
from connectome_assets.volumes.precomputed import destination_url, info_from_spec, kvstore_spec, open_scale, read_info, scales_of, shard_files, write_info
from connectome_assets.volumes.pyramid import parent_chunks_of, read_parent_chunks, write_downres_shard
from connectome_assets.volumes.sharding import ShardFileError, shard_chunk_data
from connectome_assets.volumes.verify import reference_mode, validate_dvid, verify_scale
from connectome_assets.volumes.worker import main as worker_main
from connectome_assets.volumes.worker import TasksFailed, run_manifest, run_task
from connectome_assets.volumes.synthetic import write_export_scale
from connectome_assets_tests.volumes.test_s0 import labelled_volume, small_spec


@pytest.fixture
def built(tmp_path: Path):
    info = info_from_spec(small_spec(size=(300, 260, 200), scales=4), "pyramid.json")
    volume = labelled_volume((200, 260, 300), seed=5)
    export = tmp_path / "export"
    write_export_scale(export, info, 0, volume)
    dest = destination_url(str(tmp_path / "out"))
    write_info(dest, info)
    return info, volume, export, dest, tmp_path


def test_s0_then_three_downres_scales_verify(built) -> None:
    info, volume, export, dest, tmp = built
    scales = scales_of(info)
    assert validate_dvid(export, scales[0]).ok
    manifest = plan_dvid_scale(export, dest, 0, shards_per_task=1)
    assert len(manifest.tasks) == len(list((export / "s0").glob("*.arrow"))) > 1
    assert [row["tier_gib"] for row in tier_table(manifest)] == [4]
    results = run_manifest(str(manifest.save(tmp / "m0.json")), workers=2)
    assert sum(r.shards for r in results) == len(manifest.shards)
    assert verify_scale(manifest).ok
    assert np.array_equal(open_scale(dest, 0)[:, :, :, 0].read().result(), volume.transpose(2, 1, 0))
    expected = volume.transpose(2, 1, 0)
    for scale in (1, 2, 3):
        manifest = plan_downres_scale(dest, scale)
        for index in range(len(manifest.tasks)):
            run_task(manifest, index, report=lambda line: None)
        check = verify_scale(manifest)
        assert check.ok and check.chunks_checked > 0, check.problems
        expected = reference_mode(expected, "tensorstore")
        assert np.array_equal(open_scale(dest, scale)[:, :, :, 0].read().result(), expected)


def scale_chunks(dest: str, scale) -> dict[str, dict[int, bytes]]:
    """Every shard file of a scale: chunk id -> its stored bytes."""
    folder = Path(dest[len("file://") :], scale.key)
    return {name: shard_chunk_data((folder / name).read_bytes(), scale.sharding) for name in sorted(shard_files(dest, scale.key))}


def test_downres_shards_equal_tensorstores_chunk_for_chunk(tmp_path: Path) -> None:
    """Downres scales encoded by encode_chunk and put through ShardWriter hold exactly the chunks (ids and
    bytes) that writing the same voxels through tensorstore's neuroglancer_precomputed driver stores,
    clipped edge chunks and chunks that downsample to all 0 included; the counts say so too."""
    info = info_from_spec(small_spec(size=(300, 260, 200), scales=3), "pyramid.json")
    volume = labelled_volume((200, 260, 300), seed=6)
    volume[:, :, 128:256] = np.where(volume[:, :, 128:256] == 7, np.uint64(7), np.uint64(0))  # sparse voxels: scale 1 there is all 0
    export = tmp_path / "export"
    write_export_scale(export, info, 0, volume)
    ours, theirs = destination_url(str(tmp_path / "ours")), destination_url(str(tmp_path / "tensorstore"))
    for dest in (ours, theirs):
        write_info(dest, info)
    manifest = plan_dvid_scale(export, ours, 0)
    for index in range(len(manifest.tasks)):
        run_task(manifest, index, report=lambda line: None)
    scales = scales_of(info)
    expected = volume.transpose(2, 1, 0)
    for scale in (1, 2):
        lines: list[dict] = []
        manifest = plan_downres_scale(ours, scale)
        for job in manifest.shards:  # encoded chunks only: one batch of parent chunks read, one output chunk built
            assert job.memory_bytes == shard_memory(job.chunks, downres_source_bytes(scales[scale - 1]), scale, holds_voxels=False)
        for index in range(len(manifest.tasks)):
            run_task(manifest, index, report=lines.append)
        expected = reference_mode(expected, "tensorstore")
        txn = ts.Transaction()
        open_scale(theirs, scale).with_transaction(txn)[:, :, :, 0].write(expected).result()
        txn.commit_async().result()
        written = scale_chunks(ours, scales[scale])
        assert written == scale_chunks(theirs, scales[scale]) and written
        stored = sum(len(chunks) for chunks in written.values())
        assert sum(line["written"] for line in lines) == stored
        assert sum(line["chunks"] for line in lines) == stored + sum(line["all_zero"] for line in lines)
        if scale == 1:
            assert sum(line["all_zero"] for line in lines) > 0


def test_downres_of_a_z_compressed_s0_takes_four_shallow_chunks_per_output_chunk_in_z(tmp_path: Path) -> None:
    """s0 under z_compress 1 has 64×64×32 chunks, s1 64³: an s1 chunk lies over 2×2×4 s0 chunks."""
    doubled = labelled_volume((200, 70, 90), seed=4)  # 200 slices -> 100 kept -> s0 chunks z 0..3 -> s1 50 deep
    export = tmp_path / "export"
    write_export_scale(export, info_from_spec(small_spec(size=(90, 70, 200)), "zdoubled.json"), 0, doubled)
    native = info_from_spec(small_spec(size=(90, 70, 100), z_chunk=32), "native.json", z_compress=1)
    dest = destination_url(str(tmp_path / "out"))
    write_info(dest, native)
    for index in range(len((manifest := plan_dvid_scale(export, dest, 0, z_compress=1)).tasks)):
        run_task(manifest, index, report=lambda line: None)
    s0 = open_scale(dest, 0)[:, :, :, 0].read().result()
    assert np.array_equal(s0, doubled[::2].transpose(2, 1, 0))
    manifest = plan_downres_scale(dest, 1)
    for index in range(len(manifest.tasks)):
        run_task(manifest, index, report=lambda line: None)
    assert verify_scale(manifest).ok
    assert np.array_equal(open_scale(dest, 1)[:, :, :, 0].read().result(), reference_mode(s0, "tensorstore"))


def test_a_corrupt_parent_chunk_fails_its_output_shard_by_name_and_keeps_the_good_one(built) -> None:
    info, _, export, gzipped, tmp = built
    raw_info = copy.deepcopy(info)
    for scale in raw_info["scales"]:
        scale["sharding"]["data_encoding"] = "raw"
    raw = destination_url(str(tmp / "raw"))
    write_info(raw, raw_info)
    for dest in (gzipped, raw):
        for index in range(len((manifest := plan_dvid_scale(export, dest, 0)).tasks)):
            run_task(manifest, index, report=lambda line: None)
        manifest = plan_downres_scale(dest, 1)
        for index in range(len(manifest.tasks)):
            run_task(manifest, index, report=lambda line: None)
    parent, target = scales_of(info)[:2]
    job = manifest.shards[0]
    output = Path(raw[len("file://") :], target.key, job.output_file)
    good = output.read_bytes()

    def corrupt(dest: str, change) -> str:
        """Apply `change(data, offset)` to the first stored chunk of the job's first parent shard; its name."""
        path = Path(dest[len("file://") :], parent.key, job.parent_shards[0])
        offset, _ = min(shard_index(dest, parent, job.parent_shards[0]).values())
        data = bytearray(path.read_bytes())
        path.write_bytes(change(data, offset))
        return f"{parent.key}/{job.parent_shards[0]}"

    def write(dest: str) -> None:
        write_downres_shard(dest, scales_of(read_info(dest))[0], scales_of(read_info(dest))[1], job)

    named = corrupt(raw, lambda data, at: data[:at] + struct.pack("<I", 2) + data[at + 4 :])
    with pytest.raises(CsegChunkError, match=rf"{named}: chunk \(\d+, \d+, \d+\): the chunk's channel starts at word 2, not 1"):
        write(raw)
    assert output.read_bytes() == good  # the previous shard stays as it was
    chunks = [p for parents in parent_chunks_of(raw, parent, target, job).values() for p in parents]
    named = corrupt(raw, lambda data, at: data[: at + 10])  # the chunk data, and the indices after it, cut off
    with pytest.raises(ShardFileError, match=rf"{named}: the shard's index cannot be read"):
        write(raw)
    with pytest.raises(ShardFileError, match=rf"{named}: bytes \d+\.\.\d+ \(\d+ chunks? from \(\d+, \d+, \d+\)\) cannot be read \(OUT_OF_RANGE"):
        read_parent_chunks(ts.KvStore.open(kvstore_spec(raw)).result(), raw, parent, chunks)  # the index read before the cut
    assert output.read_bytes() == good
    named = corrupt(gzipped, lambda data, at: data[:at] + b"\0" * 8 + data[at + 8 :])
    with pytest.raises(CsegChunkError, match=rf"{named}: chunk \(\d+, \d+, \d+\) is not valid gzip data"):
        write(gzipped)


def test_only_missing_replans_what_is_absent_and_verify_names_it(built, capsys) -> None:
    info, _, export, dest, tmp = built
    manifest = plan_dvid_scale(export, dest, 0, writer="array", shards_per_task=1)  # the fallback writes the first shard
    assert Manifest.load(manifest.save(tmp / "m0.json")).writer == "array"
    assert worker_main(["--manifest", str(tmp / "m0.json"), "--task-index", "0"]) == 0
    assert '"writer": "array"' in capsys.readouterr().out
    # The array writer's estimate holds every chunk as uint64; the transcode writer's does not.
    transcoding = plan_dvid_scale(export, dest, 0, shards_per_task=1)
    assert transcoding.writer == "transcode" and transcoding.shards[0].memory_bytes < manifest.shards[0].memory_bytes
    assert plan_dvid_scale(export, dest, 0, writer="transcode", z_compress=1).writer == "array"  # z_compress needs voxels
    with pytest.raises(ValueError, match="unknown writer 'fast': one of transcode, array"):
        plan_dvid_scale(export, dest, 0, writer="fast")
    check = verify_scale(manifest)
    assert not check.ok and all("is missing (from " in p for p in check.problems)
    assert len(check.problems) == len(manifest.shards) - 1
    rest = plan_dvid_scale(export, dest, 0, only_missing=True, shards_per_task=1)
    assert len(rest.shards) == len(manifest.shards) - 1
    run_manifest(str(rest.save(tmp / "rest.json")), workers=1)
    assert verify_scale(manifest).ok
    assert plan_dvid_scale(export, dest, 0, only_missing=True).shards == []


def test_verify_catches_a_wrong_chunk(built) -> None:
    info, _, export, dest, tmp = built
    manifest = plan_dvid_scale(export, dest, 0)
    run_manifest(str(manifest.save(tmp / "m0.json")), workers=1)
    store = open_scale(dest, 0)
    store[:, :, :, 0].write(np.full(store.shape[:3], 12345, np.uint64)).result()  # overwrite everything
    check = verify_scale(manifest)
    assert not check.ok and "voxels different from" in check.problems[0]


def test_plan_errors_are_clear(built, tmp_path: Path) -> None:
    info, _, export, dest, tmp = built
    with pytest.raises(PlanError, match="no DVID export shards"):
        plan_dvid_scale(export, dest, 1)
    with pytest.raises(PlanError, match="the parent scale has no shards yet; build scale 0 first"):
        plan_downres_scale(dest, 1)
    with pytest.raises(PlanError, match="cannot read the manifest"):
        Manifest.load(tmp_path / "nope.json")
    assert worker_main(["--manifest", str(plan_dvid_scale(export, dest, 0).save(tmp / "m.json")), "--task-index", "99"]) == 1
    assert shard_files(dest, scales_of(info)[0].key) == set()


def test_two_dvid_files_for_one_output_shard_are_refused(built) -> None:
    info, _, export, dest, tmp = built
    first = export / "s0" / "0_0_0.arrow"
    twin = export / "s0" / "64_0_0.arrow"  # inside the same 128-voxel shard region: same output shard
    twin.write_bytes(first.read_bytes())
    twin.with_suffix(".csv").write_text(first.with_suffix(".csv").read_text())
    with pytest.raises(PlanError, match=f"both map to output shard {scales_of(info)[0].key}/"):
        plan_dvid_scale(export, dest, 0)
    assert any("both map to" in p for p in validate_dvid(export, scales_of(info)[0]).problems)


def test_cli_runs_and_verifies_scales(built, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    import json

    from connectome_assets.cli import main

    info, volume, export, dest, tmp = built
    spec = {k: v for k, v in info.items()}
    (export / "spec.json").write_text(json.dumps(spec))
    monkeypatch.setenv("CONNECTOME_HOME", str(tmp / "home"))
    out = str(tmp / "cli-out")
    assert main(["volume", "plan", str(export), out, "--downres", "1", "--dry-run"]) == 0
    assert "not planned yet" in capsys.readouterr().out  # nothing written by a dry run
    assert main(["volume", "run", str(export), out, "--downres", "1", "2"]) == 0
    printed = capsys.readouterr().out
    assert "scale 0 (dvid, transcode writer)" in printed and "scale 2 (downres)" in printed
    assert "FAILED" not in printed and "precomputed://file://" in printed
    assert main(["volume", "verify", str(export), out, "--downres", "1", "2"]) == 0
    array_out = str(tmp / "cli-array")
    assert main(["volume", "run", str(export), array_out, "--writer", "array"]) == 0
    assert "scale 0 (dvid, array writer)" in capsys.readouterr().out
    assert np.array_equal(open_scale(destination_url(array_out), 0).read().result(), open_scale(destination_url(out), 0).read().result())
    assert main(["volume", "verify", str(tmp / "nowhere"), out]) == 2  # no DVID scales found and none asked for
    assert "no scales" in capsys.readouterr().err
    assert main(["volume", "run", str(export), out, "--spec", str(tmp / "missing.json")]) == 2
    assert "cannot read the volume spec" in capsys.readouterr().err


def test_local_processes_run_every_task_and_name_the_failed_one(built) -> None:
    info, _, export, dest, tmp = built
    broken = sorted((export / "s0").glob("*.arrow"))[0]
    broken.write_bytes(b"not an arrow file")  # planning reads names and indexes; the worker reads the shard
    manifest = plan_dvid_scale(export, dest, 0, shards_per_task=1)
    (bad,) = [i for i, task in enumerate(manifest.tasks) if task.shards[0].source == str(broken)]
    shards: list[str] = []
    with pytest.raises(TasksFailed, match=rf"1 of {len(manifest.tasks)} tasks failed \(task {bad} exited with 1: worker: .*{broken.name}"):
        run_manifest(manifest.save(tmp / "m0.json"), workers=2, on_shard=lambda line: shards.append(line["shard"]))
    # the other tasks ran to the end, each shard reported once as it finished
    assert sorted(shards) == sorted(job.output_file for i, task in enumerate(manifest.tasks) if i != bad for job in task.shards)
    assert not verify_scale(manifest).ok
