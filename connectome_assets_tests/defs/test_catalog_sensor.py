"""`dataset_catalog_sensor` through its cursor cases."""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import pytest

from connectome_assets.connectome.catalog import write_entry
from connectome_assets.defs.connectome.sensors import dataset_catalog_sensor
from connectome_assets.defs.resources import CatalogResource
from connectome_assets_tests.releases import entry, write_release


@pytest.fixture
def catalog(tmp_path: Path) -> Path:
    return tmp_path / "catalog"


@pytest.fixture
def instance():
    with dg.instance_for_test() as instance:
        yield instance


def tick(instance: dg.DagsterInstance, catalog: Path, cursor: str | None) -> dg.SensorResult:
    context = dg.build_sensor_context(instance=instance, cursor=cursor, resources={"catalog": CatalogResource(path=str(catalog))})
    result = dataset_catalog_sensor(context)
    # Apply the partition requests as the daemon would.
    for request in result.dynamic_partitions_requests or []:
        instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
    return result


def test_empty_catalog_skips(instance, catalog: Path) -> None:
    result = tick(instance, catalog, None)
    assert not result.run_requests and result.skip_reason is not None
    assert json.loads(result.cursor) == {}


def test_new_entry_adds_a_partition_and_requests_its_run_once(instance, catalog: Path, tmp_path: Path) -> None:
    write_entry(catalog, entry("manc", write_release(tmp_path / "r", [1, 2], [(1, 2, 1)])))
    first = tick(instance, catalog, None)
    assert [r.partition_key for r in first.run_requests] == ["manc"]
    assert [list(r.partition_keys) for r in first.dynamic_partitions_requests] == [["manc"]]
    assert instance.get_dynamic_partitions("datasets") == ["manc"]

    again = tick(instance, catalog, first.cursor)
    assert not again.run_requests and again.cursor == first.cursor


def test_edited_entry_requests_a_run_without_adding_the_partition_again(instance, catalog: Path, tmp_path: Path) -> None:
    release = write_release(tmp_path / "r", [1, 2], [(1, 2, 1)])
    write_entry(catalog, entry("manc", release))
    first = tick(instance, catalog, None)
    edited = entry("manc", release)
    write_entry(catalog, type(edited)(**{**edited.__dict__, "description": "v0.9 minconf 0.5"}))
    second = tick(instance, catalog, first.cursor)
    assert [r.partition_key for r in second.run_requests] == ["manc"]
    assert second.run_requests[0].run_key != first.run_requests[0].run_key
    assert not second.dynamic_partitions_requests


def test_broken_entry_is_reported_and_retried_after_it_is_fixed(instance, catalog: Path, tmp_path: Path) -> None:
    catalog.mkdir(parents=True)
    (catalog / "hemibrain.yaml").write_text("name: hemibrain\nmodel: [unclosed\n")
    broken = tick(instance, catalog, None)
    assert not broken.run_requests
    assert "hemibrain.yaml" in broken.skip_reason.skip_message and "not valid YAML" in broken.skip_reason.skip_message
    assert "hemibrain" not in json.loads(broken.cursor)

    write_entry(catalog, entry("hemibrain", write_release(tmp_path / "r", [1], [])))
    fixed = tick(instance, catalog, broken.cursor)
    assert [r.partition_key for r in fixed.run_requests] == ["hemibrain"]


def test_unknown_model_is_not_turned_into_a_partition(instance, catalog: Path) -> None:
    catalog.mkdir(parents=True)
    (catalog / "worm.yaml").write_text("name: worm\nmodel: nope\nsources: {}\n")
    result = tick(instance, catalog, None)
    assert not result.run_requests and "unknown source model 'nope'" in result.skip_reason.skip_message
    assert instance.get_dynamic_partitions("datasets") == []
