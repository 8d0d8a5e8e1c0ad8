"""Integrity queries behind the blocking asset checks."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from clickhouse_connect.driver.client import Client

from connectome_assets.warehouse.schema import check_identifier

SAMPLE_IDS = 20


@dataclass(frozen=True)
class EndpointIntegrity:
    pre_missing: int
    post_missing: int
    sample_pre_missing: list[int]
    sample_post_missing: list[int]

    @property
    def ok(self) -> bool:
        return self.pre_missing == 0 and self.post_missing == 0


def endpoint_integrity(client: Client, database: str, dataset_id: uuid.UUID) -> EndpointIntegrity:
    """The runbook's two counts: edges of vw_graph_edges whose pre / post id is not a neuron.

    `join_use_nulls = 1` is required: with ClickHouse's default an unmatched LEFT JOIN row
    carries neuron_id = 0, not NULL, and the runbook's `IS NULL` test would always count zero.
    """
    db = check_identifier(database)
    params = {"ds": str(dataset_id)}
    counts: dict[str, int] = {}
    samples: dict[str, list[int]] = {}
    for side in ("pre", "post"):
        base = f"""
            FROM {db}.vw_graph_edges AS e
            LEFT JOIN (SELECT neuron_id FROM {db}.neurons WHERE dataset_id = {{ds:UUID}}) AS n
              ON n.neuron_id = e.{side}_neuron_id
            WHERE e.dataset_id = {{ds:UUID}} AND n.neuron_id IS NULL"""
        settings = "SETTINGS join_use_nulls = 1"
        counts[side] = int(client.command(f"SELECT count() {base} {settings}", parameters=params))
        rows = client.query(f"SELECT DISTINCT e.{side}_neuron_id {base} ORDER BY 1 LIMIT {SAMPLE_IDS} {settings}", parameters=params).result_rows
        samples[side] = [int(r[0]) for r in rows]
    return EndpointIntegrity(counts["pre"], counts["post"], samples["pre"], samples["post"])


@dataclass(frozen=True)
class DuplicateIds:
    duplicated_ids: int
    sample: list[int]


def duplicate_neuron_ids(client: Client, database: str, dataset_id: uuid.UUID) -> DuplicateIds:
    db = check_identifier(database)
    query = f"""SELECT neuron_id FROM {db}.neurons WHERE dataset_id = {{ds:UUID}}
                GROUP BY neuron_id HAVING count() > 1"""
    params = {"ds": str(dataset_id)}
    total = int(client.command(f"SELECT count() FROM ({query})", parameters=params))
    sample = [int(r[0]) for r in client.query(f"{query} ORDER BY neuron_id LIMIT {SAMPLE_IDS}", parameters=params).result_rows]
    return DuplicateIds(total, sample)
