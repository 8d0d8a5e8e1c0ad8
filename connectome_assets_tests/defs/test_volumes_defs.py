"""The volume lineage as Dagster runs it, and `dvid_export_sensor` through its cursor cases."""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import numpy as np
import pytest

from connectome_assets.cli import run_partition_selection
from connectome_assets.defs.resources import VolumesResource
from connectome_assets.defs.volumes.sensors import dvid_export_sensor
from connectome_assets.settings import Settings
from connectome_assets.volumes.precomputed import info_from_spec, open_scale
from connectome_assets.volumes.synthetic import finish_export, write_export_scale
from connectome_assets_tests.defs.test_connectome_lineage import checks_of, materialized, started_steps
from connectome_assets_tests.volumes.test_s0 import labelled_volume, small_spec


def make_export(root: Path, name: str, finished: bool = True) -> np.ndarray:
    spec = small_spec(size=(200, 130, 160), scales=3)
    volume = labelled_volume((160, 130, 200), seed=4)
    write_export_scale(root / name, info_from_spec(spec, "spec.json"), 0, volume)
    (root / name / "spec.json").write_text(json.dumps(spec))
    if finished:
        finish_export(root / name)
    return volume


def run_volume(settings: Settings, name: str, selection: dg.AssetSelection) -> dg.ExecuteInProcessResult:
    return run_partition_selection(settings, "dvid_exports", name, selection)


@pytest.mark.parametrize("metadata_url", ["sqlite"], indirect=True)  # no metadata involved
def test_volume_job_builds_and_verifies_every_scale(settings: Settings) -> None:
    volume = make_export(settings.exports, "demo-export")
    result = run_volume(settings, "demo-export", dg.AssetSelection.groups("volumes"))
    assert result.success
    checks = checks_of(result)
    assert all(checks[f"ng_scale_{k}/scale_complete"] for k in range(12))
    events = {e.asset_key.to_user_string(): e.materialization.metadata for e in result.get_asset_materialization_events()}
    assert events["ng_scale_0"]["source"].value == "dvid" and events["ng_scale_2"]["source"].value == "downres"
    assert events["ng_scale_0"]["writer"].value == "transcode" and "writer" not in events["ng_scale_2"]
    assert events["ng_scale_5"]["status"].value == "not in this volume's spec"
    assert events["ng_info"]["neuroglancer"].value.startswith("precomputed://file://")
    dest = VolumesResource(exports="", destination_root=f"{settings.object_store}/volumes", manifests="").destination("demo-export") + "/"
    assert np.array_equal(open_scale(dest, 0)[:, :, :, 0].read().result(), volume.transpose(2, 1, 0))


@pytest.mark.parametrize("metadata_url", ["sqlite"], indirect=True)
def test_a_missing_shard_fails_the_check_and_blocks_the_next_scale(settings: Settings) -> None:
    make_export(settings.exports, "broken")
    assert run_volume(settings, "broken", dg.AssetSelection.assets("ng_info", "ng_scale_0")).success
    key = json.loads((Path(settings.object_store[len("file://") :]) / "volumes" / "broken" / "info").read_text())["scales"][0]["key"]
    shard = sorted((Path(settings.object_store[len("file://") :]) / "volumes" / "broken" / key).glob("*.shard"))[0]
    shard.unlink()  # lost behind the platform's back
    result = run_volume(settings, "broken", dg.AssetSelection.checks_for_assets("ng_scale_0") | dg.AssetSelection.assets("ng_scale_1"))
    assert checks_of(result)["ng_scale_0/scale_complete"] is False
    assert "ng_scale_1" not in started_steps(result) and materialized(result) == set()


@pytest.fixture
def instance():
    with dg.instance_for_test() as instance:
        yield instance


def tick(instance: dg.DagsterInstance, root: Path, cursor: str | None) -> dg.SensorResult:
    context = dg.build_sensor_context(instance=instance, cursor=cursor, resources={"volumes": VolumesResource(exports=str(root), destination_root="file:///x", manifests="file:///x")})
    result = dvid_export_sensor(context)
    for request in result.dynamic_partitions_requests or []:
        instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
    return result


def added(result: dg.SensorResult) -> list[str]:
    assert not result.run_requests  # automation converts what the sensor adds
    return [key for request in result.dynamic_partitions_requests or [] for key in request.partition_keys]


def test_sensor_cursor_cases(instance, tmp_path: Path) -> None:
    root = tmp_path / "exports"
    assert tick(instance, root, None).skip_reason is not None  # no exports root yet
    make_export(root, "finished")
    make_export(root, "growing", finished=False)
    first = tick(instance, root, None)
    assert added(first) == ["finished"]  # export.log present
    assert json.loads(first.cursor)["growing"]["added"] is False
    # The growing export gets another block: still not stable.
    extra = root / "growing" / "s0" / "extra.csv"
    extra.write_text("x")
    second = tick(instance, root, first.cursor)
    assert added(second) == []
    # Same listing on the next tick: complete, added once.
    third = tick(instance, root, second.cursor)
    assert added(third) == ["growing"]
    assert sorted(instance.get_dynamic_partitions("dvid_exports")) == ["finished", "growing"]
    fourth = tick(instance, root, third.cursor)
    assert added(fourth) == [] and fourth.skip_reason is not None
