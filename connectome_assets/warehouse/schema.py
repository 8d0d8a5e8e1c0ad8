"""DDL of the canonical ClickHouse tables. Idempotent: run before every write.

Tables are partitioned by dataset_id so that one dataset's rows are swapped in atomically with
`REPLACE PARTITION` and never touch another dataset's.
"""

from __future__ import annotations

import re

from clickhouse_connect.driver.client import Client

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")

CANONICAL_TABLES = ("neurons", "synapses")


def check_identifier(name: str) -> str:
    if not _IDENTIFIER.match(name):
        raise ValueError(f"{name!r} is not a valid ClickHouse identifier")
    return name


def ddl_statements(database: str) -> list[str]:
    db = check_identifier(database)
    return [
        f"CREATE DATABASE IF NOT EXISTS {db}",
        f"""CREATE TABLE IF NOT EXISTS {db}.neurons (
            dataset_id UUID,
            neuron_id UInt64,
            name String,
            type LowCardinality(String),
            instance String,
            class LowCardinality(String),
            superclass LowCardinality(String),
            polarity LowCardinality(String),
            soma_side LowCardinality(String),
            status LowCardinality(String),
            attributes Map(String, String)
        ) ENGINE = MergeTree PARTITION BY dataset_id ORDER BY (dataset_id, neuron_id)""",
        f"""CREATE TABLE IF NOT EXISTS {db}.synapses (
            dataset_id UUID,
            pre_neuron_id UInt64,
            post_neuron_id UInt64,
            weight UInt32,
            synapse_class LowCardinality(String),
            neuropil LowCardinality(String)
        ) ENGINE = MergeTree PARTITION BY dataset_id ORDER BY (dataset_id, pre_neuron_id, post_neuron_id)""",
        # The canonical edge stream: one row per directed neuron pair, weights summed over
        # synapse classes and neuropils.
        f"""CREATE VIEW IF NOT EXISTS {db}.vw_graph_edges AS
            SELECT dataset_id, pre_neuron_id, post_neuron_id, sum(weight) AS weight
            FROM {db}.synapses
            GROUP BY dataset_id, pre_neuron_id, post_neuron_id""",
        f"""CREATE TABLE IF NOT EXISTS {db}.precomputed_analysis_status (
            dataset_id UUID,
            product LowCardinality(String),
            status LowCardinality(String),
            backend LowCardinality(String),
            row_count UInt64,
            exact Bool,
            params String,
            source_data_version String,
            computed_at DateTime64(3, 'UTC'),
            message String DEFAULT ''
        ) ENGINE = ReplacingMergeTree(computed_at) ORDER BY (dataset_id, product)""",
        # Homes created before `message` existed get the column too.
        f"ALTER TABLE {db}.precomputed_analysis_status ADD COLUMN IF NOT EXISTS message String DEFAULT ''",
        # Bottleneck neurons (docs/graph-products.md): one row per neuron with at least one
        # connection to another neuron; `rank` 1 is the strongest bottleneck.
        f"""CREATE TABLE IF NOT EXISTS {db}.precomputed_bottleneck_neurons (
            dataset_id UUID,
            neuron_id UInt64,
            name String,
            type LowCardinality(String),
            polarity LowCardinality(String),
            is_articulation_point Bool,
            separated_neurons UInt32,
            components_after_removal UInt32,
            degree UInt32,
            in_degree UInt32,
            out_degree UInt32,
            in_weight UInt64,
            out_weight UInt64,
            betweenness Nullable(Float64),
            rank UInt32
        ) ENGINE = MergeTree PARTITION BY dataset_id ORDER BY (dataset_id, rank)""",
    ]


def ensure_schema(client: Client, database: str) -> None:
    for statement in ddl_statements(database):
        client.command(statement)
