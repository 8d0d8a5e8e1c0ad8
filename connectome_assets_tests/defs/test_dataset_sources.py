"""The observable `dataset_sources`: one data version per dataset, the sources' fingerprint."""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg

# Dagster 1.13 does not export `observe` at the top level; it is the in-process observation run.
from dagster._core.definitions.observe import observe as observe_in_process

from connectome_assets.connectome.catalog import write_entry
from connectome_assets.defs.connectome.assets import dataset_sources
from connectome_assets.defs.resources import CatalogResource, MetadataResource
from connectome_assets_tests.releases import entry, write_release


def observe(instance: dg.DagsterInstance, catalog: Path) -> dict[str, str]:
    metadata = MetadataResource(url=f"sqlite:///{catalog.parent / 'metadata.sqlite'}")
    result = observe_in_process([dataset_sources], instance=instance, resources={"catalog": CatalogResource(path=str(catalog)), "metadata": metadata})
    assert result.success
    return {
        e.event_specific_data.asset_observation.partition: e.event_specific_data.asset_observation.data_version
        for e in result.all_events
        if e.event_type == dg.DagsterEventType.ASSET_OBSERVATION
    }


def test_data_version_per_dataset_changes_only_when_its_files_do(tmp_path: Path) -> None:
    catalog = tmp_path / "catalog"
    a = write_release(tmp_path / "a", [1, 2], [(1, 2, 1)])
    write_entry(catalog, entry("a", a))
    write_entry(catalog, entry("b", write_release(tmp_path / "b", [1, 2], [(1, 2, 1)])))
    (catalog / "c.yaml").write_text("name: c\nmodel: flyem_feather\nsources: {annotations: /missing.feather, weights: /missing2.feather}\n")
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("datasets", ["a", "b", "c"])
        first = observe(instance, catalog)
        assert set(first) == {"a", "b"}  # the broken entry is reported, not given a version
        assert observe(instance, catalog) == first
        weights = Path(a["weights"])
        os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 1_000_000_000))
        second = observe(instance, catalog)
        assert second["a"] != first["a"] and second["b"] == first["b"]
