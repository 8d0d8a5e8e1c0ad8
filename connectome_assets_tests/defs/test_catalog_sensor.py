"""`dataset_catalog_sensor` through its cursor cases: partitions and observations of the sources."""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import pytest

from connectome_assets.connectome.catalog import write_entry
from connectome_assets.defs.connectome.sensors import dataset_catalog_sensor
from connectome_assets.defs.resources import CatalogResource, MetadataResource
from connectome_assets_tests.releases import entry, write_release


@pytest.fixture
def catalog(tmp_path: Path) -> Path:
    return tmp_path / "catalog"


@pytest.fixture
def instance():
    with dg.instance_for_test() as instance:
        yield instance


def metadata(catalog: Path) -> MetadataResource:
    return MetadataResource(url=f"sqlite:///{catalog.parent / 'metadata.sqlite'}")


def tick(instance: dg.DagsterInstance, catalog: Path, cursor: str | None) -> dg.SensorResult:
    context = dg.build_sensor_context(instance=instance, cursor=cursor, resources={"catalog": CatalogResource(path=str(catalog)), "metadata": metadata(catalog)})
    result = dataset_catalog_sensor(context)
    # Apply the partition requests and the observations as the daemon would.
    for request in result.dynamic_partitions_requests or []:
        instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
    for event in result.asset_events:
        instance.report_runless_asset_event(event)
    return result


def observed(result: dg.SensorResult) -> dict[str, str]:
    """Partition -> the data version the sensor observed for `dataset_sources`."""
    assert all(e.asset_key == dg.AssetKey("dataset_sources") for e in result.asset_events)
    return {e.partition: e.tags["dagster/data_version"] for e in result.asset_events}


def test_empty_catalog_skips(instance, catalog: Path) -> None:
    result = tick(instance, catalog, None)
    assert not result.asset_events and result.skip_reason is not None
    assert json.loads(result.cursor) == {}


def test_new_entry_adds_a_partition_and_observes_its_sources_once(instance, catalog: Path, tmp_path: Path) -> None:
    write_entry(catalog, entry("manc", write_release(tmp_path / "r", [1, 2], [(1, 2, 1)])))
    first = tick(instance, catalog, None)
    assert list(observed(first)) == ["manc"]
    assert observed(first)["manc"] == CatalogResource(path=str(catalog)).sources_version("manc", metadata(catalog).get_store())
    assert [list(r.partition_keys) for r in first.dynamic_partitions_requests] == [["manc"]]
    assert instance.get_dynamic_partitions("datasets") == ["manc"]
    assert not first.run_requests  # automation decides what to materialize

    again = tick(instance, catalog, first.cursor)
    assert not again.asset_events and again.cursor == first.cursor


def test_edited_entry_is_a_new_sources_version_without_adding_the_partition_again(instance, catalog: Path, tmp_path: Path) -> None:
    release = write_release(tmp_path / "r", [1, 2], [(1, 2, 1)])
    write_entry(catalog, entry("manc", release))
    first = tick(instance, catalog, None)
    edited = entry("manc", release)
    write_entry(catalog, type(edited)(**{**edited.__dict__, "description": "v0.9 minconf 0.5"}))
    second = tick(instance, catalog, first.cursor)
    assert list(observed(second)) == ["manc"]
    assert observed(second)["manc"] != observed(first)["manc"]  # only the entry's description changed
    assert not second.dynamic_partitions_requests


def test_broken_entry_is_reported_and_retried_after_it_is_fixed(instance, catalog: Path, tmp_path: Path) -> None:
    catalog.mkdir(parents=True)
    (catalog / "hemibrain.yaml").write_text("name: hemibrain\nmodel: [unclosed\n")
    broken = tick(instance, catalog, None)
    assert not broken.asset_events
    assert "hemibrain.yaml" in broken.skip_reason.skip_message and "not valid YAML" in broken.skip_reason.skip_message
    assert "hemibrain" not in json.loads(broken.cursor)

    write_entry(catalog, entry("hemibrain", write_release(tmp_path / "r", [1], [])))
    fixed = tick(instance, catalog, broken.cursor)
    assert list(observed(fixed)) == ["hemibrain"]


def test_unknown_model_is_not_turned_into_a_partition(instance, catalog: Path) -> None:
    catalog.mkdir(parents=True)
    (catalog / "worm.yaml").write_text("name: worm\nmodel: nope\nsources: {}\n")
    result = tick(instance, catalog, None)
    assert not result.asset_events and "unknown source model 'nope'" in result.skip_reason.skip_message
    assert instance.get_dynamic_partitions("datasets") == []
