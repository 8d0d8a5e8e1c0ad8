"""Maintenance op jobs. Thin: the library plans and runs the work."""

import dagster as dg
from pydantic import Field

from connectome_assets.defs.resources import ClickHouseResource, MetadataResource
from connectome_assets.metadata.store import UnknownDatasetError
from connectome_assets.warehouse.purge import NotADatasetTableError, PurgeVerificationError, execute_purge, plan_purge


class PurgeDatasetConfig(dg.Config):
    dataset: str = Field(description="Name of the registered dataset whose rows are deleted.")
    tables: list[str] = Field(
        default=[], description="Only these dataset tables (default: the source tables and every dataset-scoped mv_*/precomputed_* table)."
    )
    dry_run: bool = Field(default=False, description="Only report the tables and row counts that would be deleted.")


@dg.op(pool="clickhouse")
def purge_dataset_rows(
    context: dg.OpExecutionContext, config: PurgeDatasetConfig, clickhouse: ClickHouseResource, metadata: MetadataResource
) -> dg.Output[dict]:
    """Delete one dataset's rows from its dataset tables and reset their upload state to `pending`."""
    store = metadata.get_store()
    client = clickhouse.get_client()
    try:
        dataset_id = store.dataset_id(config.dataset)
        plan = plan_purge(client, clickhouse.database, dataset_id, config.tables)
    except (UnknownDatasetError, NotADatasetTableError) as exc:
        raise dg.Failure(description=str(exc), allow_retries=False) from exc
    context.log.info(
        f"{'dry run: would delete' if config.dry_run else 'deleting'} {plan.total_rows} rows of dataset {config.dataset} ({dataset_id}): "
        + ", ".join(f"{p.table}={p.rows}" for p in plan.tables)
    )
    if config.dry_run:
        rows, reset = {p.table: p.rows for p in plan.tables}, []
    else:
        try:
            result = execute_purge(client, plan, store)
        except PurgeVerificationError as exc:
            raise dg.Failure(description=str(exc), allow_retries=False) from exc
        rows, reset = result.deleted, result.reset_state
        context.log.info(f"deleted {result.total_rows} rows; upload state reset to pending for: {', '.join(reset) or 'no table'}")
    summary = {"dataset": config.dataset, "dataset_id": str(dataset_id), "dry_run": config.dry_run, "rows": rows, "reset_state": reset}
    return dg.Output(
        summary,
        metadata={
            "dataset_id": str(dataset_id),
            "dry_run": config.dry_run,
            "tables": dg.MetadataValue.json(rows),
            "rows_deleted": dg.MetadataValue.int(0 if config.dry_run else sum(rows.values())),
            "rows_to_delete": dg.MetadataValue.int(sum(rows.values())),
            "state_reset": dg.MetadataValue.json(reset),
        },
    )


@dg.job(description="Delete one dataset's source and dataset-scoped rows (never global tables) and reset their upload state to pending.")
def purge_dataset() -> None:
    purge_dataset_rows()
