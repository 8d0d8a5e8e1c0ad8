"""Registry entries as Dagster materializes them: after the exports' and the volume's checks passed,
with lineage to their sources, the Dagster data version as materialization version, and a new
version (superseding the previous one) on every re-materialization.
"""

from __future__ import annotations

import dataclasses

import dagster as dg
import pytest

from connectome_assets.cli import run_partition_selection
from connectome_assets.connectome.catalog import DatasetEntry, write_entry
from connectome_assets.defs.resources import build_resources
from connectome_assets.defs.volumes.jobs import VOLUME_EXPORT_SELECTION
from connectome_assets.metadata.store import MetadataStore
from connectome_assets.registry.config import registry_client
from connectome_assets.settings import Settings
from connectome_assets_tests.defs.test_connectome_lineage import checks_of
from connectome_assets_tests.defs.test_volumes_defs import make_export
from connectome_assets_tests.deployed import insert_bottlenecks, record_bottleneck_status, upload_source

EXPORT_AND_REGISTER = dg.AssetSelection.assets("feature_exports", "registry_entries")


@pytest.mark.parametrize("metadata_url", ["sqlite"], indirect=True)
def test_exports_are_registered_with_lineage_and_superseded_on_rematerialization(
    settings: Settings, clickhouse, metadata_store: MetadataStore, tmp_path
) -> None:
    sources = {"annotations": str(tmp_path / "neurons.feather"), "weights": str(tmp_path / "weights.feather")}
    for path in sources.values():
        open(path, "wb").close()
    write_entry(settings.catalog, DatasetEntry("Alpha", "flyem_feather", sources, location=str(settings.catalog / "Alpha.yaml")))
    a = upload_source(clickhouse, settings.clickhouse_database, metadata_store, "Alpha", [1, 2, 3], [(1, 2, 1), (2, 3, 1)])
    insert_bottlenecks(clickhouse, settings.clickhouse_database, a, [2])
    record_bottleneck_status(clickhouse, settings.clickhouse_database, metadata_store, a, "ok", 1)

    first = run_partition_selection(settings, "datasets", "Alpha", EXPORT_AND_REGISTER)
    assert first.success and checks_of(first) == {"feature_exports/export_row_counts": True}
    events = {e.asset_key.to_user_string(): e.materialization for e in first.get_asset_materialization_events()}
    export_version = events["feature_exports"].metadata["version"].value
    assert events["registry_entries"].metadata["materialization_version"].value == export_version
    names = ["alpha.neurons", "alpha.precomputed_analysis_status", "alpha.precomputed_bottleneck_neurons", "alpha.synapses"]
    assert events["registry_entries"].metadata["registered"].value == {n: 1 for n in names}

    with registry_client(settings) as client:
        found = client.search(datastack="Alpha", status="published")
        assert [(v.name, v.version, v.materialization_version) for v in found] == [(n, 1, export_version) for n in names]
        synapses = client.show("alpha.synapses").versions[0]
        assert (synapses.row_count, synapses.format, synapses.location) == (2, "parquet", f"{settings.object_store}/exports/Alpha/{export_version}/synapses.parquet")
        assert synapses.derived_from == sorted(f"file://{p}" for p in sources.values())
        up = client.lineage("alpha.precomputed_bottleneck_neurons", direction="up")
        assert {(e.child, e.parent) for e in up.edges} >= {
            ("alpha.precomputed_bottleneck_neurons@1", "alpha.neurons@1"),
            ("alpha.precomputed_bottleneck_neurons@1", "alpha.synapses@1"),
        }

    second = run_partition_selection(settings, "datasets", "Alpha", EXPORT_AND_REGISTER)
    assert second.success
    with registry_client(settings) as client:
        versions = client.show("alpha.synapses").versions
        assert [(v.version, v.status, v.superseded_by) for v in versions] == [(2, "published", None), (1, "deprecated", "alpha.synapses@2")]
        up = client.lineage("alpha.precomputed_bottleneck_neurons", direction="up")
        assert ("alpha.precomputed_bottleneck_neurons@2", "alpha.synapses@2") in {(e.child, e.parent) for e in up.edges}


@pytest.mark.parametrize("metadata_url", ["sqlite"], indirect=True)
def test_a_volume_is_registered_after_every_scale_passed(settings: Settings) -> None:
    make_export(settings.exports, "demo-export")
    result = run_partition_selection(settings, "dvid_exports", "demo-export", VOLUME_EXPORT_SELECTION)
    assert result.success and all(checks_of(result).values())
    with registry_client(settings) as client:
        volume = client.show("demo-export.segmentation").versions[0]
    assert (volume.format, volume.status, volume.datastack) == ("neuroglancer_precomputed", "published", "demo-export")
    assert volume.location == f"{settings.object_store}/volumes/demo-export"
    assert volume.volume["data_type"] == "uint64" and len(volume.volume["scales"]) == 3
    assert volume.derived_from == [f"file://{settings.exports / 'demo-export'}"]
    assert volume.bytes == sum(f.bytes for f in volume.files) > 0


@pytest.mark.parametrize("metadata_url", ["sqlite"], indirect=True)
def test_the_registry_token_is_read_from_the_environment_at_run_time(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    remote = dataclasses.replace(settings, registry=dataclasses.replace(settings.registry, url="http://registry:8765", token="cr_secret"))
    resource = build_resources(remote)["registry"]
    assert resource.token == dg.EnvVar("CONNECTOME_REGISTRY_TOKEN")  # not the token itself: resource config shows in the UI
    monkeypatch.setenv("CONNECTOME_REGISTRY_TOKEN", "cr_secret")
    with dg.build_resources({"registry": resource}) as built, built.registry.get_client() as client:
        assert client._http.headers["Authorization"] == "Bearer cr_secret"
