"""Exports of each dataset partition's tables and products. Thin: the library does the work."""

from pathlib import Path

import dagster as dg

from connectome_assets.defs.connectome.assets import dataset_asset, failure, neurons, progress_metadata, synapses
from connectome_assets.defs.resources import ClickHouseResource, MetadataResource, StorageResource
from connectome_assets.graph.status import SourceNotUploadedError
from connectome_assets.warehouse.article_cache import ArticleCacheError, populate_article_cache
from connectome_assets.warehouse.exports import ExportError, export_dataset

# Defined by the graph stage; named by key so this stage does not import it.
BOTTLENECK_NEURONS = dg.AssetKey("bottleneck_neurons")


@dataset_asset(BOTTLENECK_NEURONS, neurons, synapses, group_name="exports", kinds=frozenset({"parquet"}))
def feature_exports(
    context: dg.AssetExecutionContext, clickhouse: ClickHouseResource, metadata: MetadataResource, storage: StorageResource
) -> dg.MaterializeResult:
    """Parquet exports of the dataset's `neurons`, `synapses` and dataset-scoped products in the object store,
    at `exports/<dataset>/<graph source version>/<table>.parquet` with a `manifest.json` written last.
    """
    try:
        result = export_dataset(
            clickhouse.get_client(), clickhouse.database, metadata.get_store(), storage.object_store, context.partition_key, context.log.info
        )
    except (ExportError, SourceNotUploadedError) as exc:
        raise failure(exc) from exc
    return dg.MaterializeResult(
        # The export's content version is the graph source version: the registry's materialization version.
        data_version=dg.DataVersion(result.version),
        metadata={
            "dataset_id": str(result.dataset_id),
            "version": result.version,
            "root": dg.MetadataValue.path(result.root),
            "manifest": dg.MetadataValue.path(result.manifest_uri),
            "row_counts": dg.MetadataValue.json({t.table: t.rows for t in result.tables}),
            "paths": dg.MetadataValue.json({t.table: t.uri for t in result.tables}),
            "bytes": dg.MetadataValue.int(sum(t.bytes for t in result.tables)),
            **progress_metadata(result.progress),
        },
    )


# On demand only (a local copy for articles), never by automation.
@dataset_asset(BOTTLENECK_NEURONS, group_name="exports", kinds=frozenset({"parquet"}), automation_condition=None)
def article_cache(
    context: dg.AssetExecutionContext, clickhouse: ClickHouseResource, metadata: MetadataResource, storage: StorageResource
) -> dg.MaterializeResult:
    """The dataset's deployed derived products as local Parquet (`<article cache>/<dataset>/`).

    Fails, leaving the previous cache in place, when a product is missing, failed, stale, or empty
    without its analysis status saying empty is expected; never writes rows ClickHouse does not hold.
    """
    try:
        result = populate_article_cache(
            clickhouse.get_client(), clickhouse.database, metadata.get_store(), context.partition_key, Path(storage.article_cache), context.log.info
        )
    except (ArticleCacheError, SourceNotUploadedError) as exc:
        raise failure(exc) from exc
    return dg.MaterializeResult(
        metadata={
            "dataset_id": str(result.dataset_id),
            "version": result.version,
            "directory": dg.MetadataValue.path(str(result.directory)),
            "row_counts": dg.MetadataValue.json({t.table: t.rows for t in result.tables}),
            "status_rows": dg.MetadataValue.int(result.status_rows),
            **progress_metadata(result.progress),
        },
    )
