"""Purge one dataset from the warehouse (runbook: "Cleaning A Partial Import").

A purge is planned before it runs: the plan names every table holding the dataset's rows (the
source tables and the dataset-scoped `mv_*` / `precomputed_*` tables, see `scoped_tables`) with
the exact number of rows it would delete, so a dry run shows what a real run does. Running the
plan deletes with synchronous mutations, checks that no row of the dataset is left, and resets
`dataset_table_state` to `pending` for the purged tables only (they are the ones to regenerate).
Global tables (no `dataset_id` column) are never in a plan.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from clickhouse_connect.driver.client import Client

from connectome_assets.metadata.store import MetadataStore
from connectome_assets.warehouse.schema import check_identifier
from connectome_assets.warehouse.scoped_tables import dataset_tables
from connectome_assets.warehouse.upload import dataset_row_count


class NotADatasetTableError(ValueError):
    pass


class PurgeVerificationError(RuntimeError):
    pass


@dataclass(frozen=True)
class PlannedTable:
    table: str
    rows: int


@dataclass(frozen=True)
class PurgePlan:
    database: str
    dataset_id: uuid.UUID
    tables: tuple[PlannedTable, ...]

    @property
    def table_names(self) -> list[str]:
        return [planned.table for planned in self.tables]

    @property
    def total_rows(self) -> int:
        return sum(planned.rows for planned in self.tables)


@dataclass(frozen=True)
class PurgeResult:
    database: str
    dataset_id: uuid.UUID
    deleted: dict[str, int]
    reset_state: list[str]

    @property
    def total_rows(self) -> int:
        return sum(self.deleted.values())


def plan_purge(client: Client, database: str, dataset_id: uuid.UUID, tables: Sequence[str] | None = None) -> PurgePlan:
    """Which tables hold the dataset's rows and how many; `tables` narrows it to those names.

    A requested name that is not a dataset table (unknown, or global) is an error naming it.
    """
    db = check_identifier(database)
    available = dataset_tables(client, db)
    selected = available
    if tables:
        requested = list(dict.fromkeys(tables))
        rejected = [name for name in requested if name not in available]
        if rejected:
            raise NotADatasetTableError(
                f"{', '.join(rejected)} {'is not a dataset table' if len(rejected) == 1 else 'are not dataset tables'} of {db}"
                f" (dataset tables: {', '.join(available)}); nothing was deleted"
            )
        selected = [name for name in available if name in requested]
    return PurgePlan(db, dataset_id, tuple(PlannedTable(name, dataset_row_count(client, db, name, dataset_id)) for name in selected))


def delete_dataset_rows(client: Client, database: str, table: str, dataset_id: uuid.UUID) -> int:
    """Delete the dataset's rows of one table with a synchronous mutation; returns how many."""
    db, name = check_identifier(database), check_identifier(table)
    present = dataset_row_count(client, db, name, dataset_id)
    # A mutation may rewrite parts even when nothing matches: skip it on tables without the dataset.
    if present:
        client.command(
            f"ALTER TABLE {db}.{name} DELETE WHERE dataset_id = {{ds:UUID}} SETTINGS mutations_sync = 2", parameters={"ds": str(dataset_id)}
        )
    left = dataset_row_count(client, db, name, dataset_id)
    if left:
        raise PurgeVerificationError(f"{db}.{name}: {left} rows of dataset {dataset_id} are left after the delete")
    return present


def execute_purge(client: Client, plan: PurgePlan, store: MetadataStore) -> PurgeResult:
    """Delete the planned tables' rows of the dataset, then reset those tables' upload state.

    The state of every table already emptied is reset even when a later table fails, so the
    state never claims rows that are gone.
    """
    deleted: dict[str, int] = {}
    try:
        for planned in plan.tables:
            deleted[planned.table] = delete_dataset_rows(client, plan.database, planned.table, plan.dataset_id)
    finally:
        reset = store.reset_table_state(plan.dataset_id, list(deleted))
    return PurgeResult(plan.database, plan.dataset_id, deleted, reset)
