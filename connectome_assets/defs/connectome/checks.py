"""Blocking integrity checks on each dataset partition: nothing downstream runs until they pass."""


import dagster as dg

from connectome_assets.defs.automation import WITH_ITS_ASSET
from connectome_assets.defs.connectome.assets import neurons, synapses
from connectome_assets.defs.connectome.partitions import datasets_partitions
from connectome_assets.defs.resources import ClickHouseResource, MetadataResource
from connectome_assets.warehouse.integrity import duplicate_neuron_ids, endpoint_integrity
from connectome_assets.warehouse.upload import dataset_row_count


def blocking_dataset_check(asset: dg.AssetsDefinition, name: str, description: str | None = None):
    """A per-dataset check that stops everything downstream of `asset` when it fails."""
    return dg.asset_check(
        asset=asset,
        name=name,
        blocking=True,
        partitions_def=datasets_partitions,
        pool="clickhouse",
        description=description,
        automation_condition=WITH_ITS_ASSET,
    )


@blocking_dataset_check(synapses, "endpoint_integrity")
def endpoint_integrity_check(
    context: dg.AssetCheckExecutionContext, clickhouse: ClickHouseResource, metadata: MetadataResource
) -> dg.AssetCheckResult:
    """Every edge of vw_graph_edges has its pre and post id among the dataset's neurons (runbook query; both counts must be zero)."""
    dataset_id = metadata.get_store().dataset_id(context.partition_key)
    found = endpoint_integrity(clickhouse.get_client(), clickhouse.database, dataset_id)
    return dg.AssetCheckResult(
        passed=found.ok,
        severity=dg.AssetCheckSeverity.ERROR,
        description=None if found.ok else f"{found.pre_missing} edges have an unknown pre neuron and {found.post_missing} an unknown post neuron",
        metadata={
            "pre_missing": dg.MetadataValue.int(found.pre_missing),
            "post_missing": dg.MetadataValue.int(found.post_missing),
            "sample_pre_missing_ids": dg.MetadataValue.json(found.sample_pre_missing),
            "sample_post_missing_ids": dg.MetadataValue.json(found.sample_post_missing),
        },
    )


@blocking_dataset_check(neurons, "neuron_ids_unique")
def neuron_ids_unique(
    context: dg.AssetCheckExecutionContext, clickhouse: ClickHouseResource, metadata: MetadataResource
) -> dg.AssetCheckResult:
    """No neuron id appears twice in the dataset's `neurons` rows."""
    dataset_id = metadata.get_store().dataset_id(context.partition_key)
    found = duplicate_neuron_ids(clickhouse.get_client(), clickhouse.database, dataset_id)
    return dg.AssetCheckResult(
        passed=found.duplicated_ids == 0,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={"duplicated_ids": dg.MetadataValue.int(found.duplicated_ids), "sample_ids": dg.MetadataValue.json(found.sample)},
    )


def build_table_state_check(asset: dg.AssetsDefinition, table: str) -> dg.AssetChecksDefinition:
    @blocking_dataset_check(
        asset,
        "table_state_consistent",
        f"dataset_table_state for `{table}` is 'uploaded' and its row_count equals the ClickHouse count: the state describes the whole table. "
        "An upload whose process is gone or whose lease expired shows as 'failed' with an 'interrupted: …' error.",
    )
    def _check(context: dg.AssetCheckExecutionContext, clickhouse: ClickHouseResource, metadata: MetadataResource) -> dg.AssetCheckResult:
        store = metadata.get_store()
        dataset_id = store.dataset_id(context.partition_key)
        state = store.table_state(dataset_id, table)
        actual = dataset_row_count(clickhouse.get_client(), clickhouse.database, table, dataset_id)
        upload_state = state.upload_state if state else "missing"
        recorded = state.row_count if state else None
        passed = upload_state == "uploaded" and recorded == actual
        return dg.AssetCheckResult(
            passed=passed,
            severity=dg.AssetCheckSeverity.ERROR,
            description=None
            if passed
            else f"state '{upload_state}' with row_count {recorded}, ClickHouse has {actual} rows"
            + (f"; {state.error_message}" if state and state.error_message else ""),
            metadata={
                "upload_state": upload_state,
                "state_row_count": dg.MetadataValue.int(recorded) if recorded is not None else dg.MetadataValue.null(),
                "clickhouse_row_count": dg.MetadataValue.int(actual),
                "error_message": (state.error_message or "") if state else "",
            },
        )

    return _check


connectome_checks = [
    endpoint_integrity_check,
    neuron_ids_unique,
    build_table_state_check(neurons, "neurons"),
    build_table_state_check(synapses, "synapses"),
]
