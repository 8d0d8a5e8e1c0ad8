"""The exports stage as Dagster runs it: feature_exports with its blocking check, and article_cache."""

from __future__ import annotations

import dagster as dg
import pytest

from connectome_assets.defs.connectome.definitions import connectome_defs
from connectome_assets.defs.connectome.partitions import datasets_partitions
from connectome_assets.defs.exports.definitions import exports_defs
from connectome_assets.defs.resources import build_resources
from connectome_assets.metadata.store import MetadataStore
from connectome_assets.settings import Settings
from connectome_assets_tests.deployed import insert_bottlenecks, record_bottleneck_status, upload_source


def run(settings: Settings, selection: dg.AssetSelection, partition: str) -> dg.ExecuteInProcessResult:
    defs = dg.Definitions.merge(connectome_defs, exports_defs, dg.Definitions(resources=build_resources(settings)))
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(datasets_partitions.name, [partition])
    graph = defs.resolve_asset_graph()
    job = defs.resolve_implicit_global_asset_job_def().get_subset(
        asset_selection=selection.resolve(graph), asset_check_selection=selection.resolve_checks(graph)
    )
    return job.execute_in_process(partition_key=partition, instance=instance, raise_on_error=False)


@pytest.mark.parametrize("metadata_url", ["sqlite"], indirect=True)
def test_exports_and_cache_materialize(settings: Settings, clickhouse, metadata_store: MetadataStore) -> None:
    database = settings.clickhouse_database
    a = upload_source(clickhouse, database, metadata_store, "alpha", [1, 2, 3], [(1, 2, 1), (2, 3, 1)])
    insert_bottlenecks(clickhouse, database, a, [2])
    record_bottleneck_status(clickhouse, database, metadata_store, a, "ok", 1)

    result = run(settings, dg.AssetSelection.assets("feature_exports", "article_cache"), "alpha")
    assert result.success
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks == {"export_row_counts": True}
    events = {e.asset_key.to_user_string(): e.materialization.metadata for e in result.get_asset_materialization_events()}
    exported = events["feature_exports"]
    assert exported["row_counts"].value == {"neurons": 3, "synapses": 2, "precomputed_analysis_status": 1, "precomputed_bottleneck_neurons": 1}
    assert exported["root"].value == f"{settings.object_store}/exports/alpha/{exported['version'].value}"
    assert events["article_cache"]["row_counts"].value == {"precomputed_bottleneck_neurons": 1}
    assert (settings.article_cache / "alpha" / "precomputed_bottleneck_neurons.parquet").exists()


@pytest.mark.parametrize("metadata_url", ["sqlite"], indirect=True)
def test_article_cache_failure_is_one_actionable_sentence(settings: Settings, clickhouse, metadata_store: MetadataStore) -> None:
    a = upload_source(clickhouse, settings.clickhouse_database, metadata_store, "alpha", [1, 2], [(1, 2, 1)])
    record_bottleneck_status(clickhouse, settings.clickhouse_database, metadata_store, a, "ok", 0)
    result = run(settings, dg.AssetSelection.assets("article_cache"), "alpha")
    assert not result.success
    failures = [e.step_failure_data.user_failure_data.description for e in result.all_events if e.is_step_failure]
    assert failures == [
        "`precomputed_bottleneck_neurons` is empty for dataset alpha although its analysis status is 'ok'; re-materialize `bottleneck_neurons`"
    ]
