"""Blocking check on feature_exports: each exported file holds exactly the ClickHouse rows."""

import dagster as dg

from connectome_assets.defs.connectome.checks import blocking_dataset_check
from connectome_assets.defs.exports.assets import feature_exports
from connectome_assets.defs.resources import ClickHouseResource, MetadataResource, StorageResource
from connectome_assets.graph.status import SourceNotUploadedError
from connectome_assets.warehouse.exports import verify_export


@blocking_dataset_check(
    feature_exports,
    "export_row_counts",
    "For every exported table of the current source version, the Parquet footer row count equals the manifest and the ClickHouse count.",
)
def export_row_counts(
    context: dg.AssetCheckExecutionContext, clickhouse: ClickHouseResource, metadata: MetadataResource, storage: StorageResource
) -> dg.AssetCheckResult:
    try:
        found = verify_export(clickhouse.get_client(), clickhouse.database, metadata.get_store(), storage.object_store, context.partition_key)
    except SourceNotUploadedError as exc:  # a re-import under way: there is no current version to compare
        return dg.AssetCheckResult(passed=False, severity=dg.AssetCheckSeverity.ERROR, description=str(exc))
    return dg.AssetCheckResult(
        passed=found.ok,
        severity=dg.AssetCheckSeverity.ERROR,
        description=None if found.ok else "; ".join(found.problems),
        metadata={
            "version": found.version,
            "root": dg.MetadataValue.path(found.root),
            "counts": dg.MetadataValue.json(
                {c.table: {"parquet": c.parquet_rows, "manifest": c.manifest_rows, "clickhouse": c.clickhouse_rows} for c in found.counts}
            ),
        },
    )


exports_checks = [export_row_counts]
