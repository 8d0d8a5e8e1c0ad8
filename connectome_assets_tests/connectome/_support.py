"""Helpers shared by the connectome tests: reading a dataset's rows back out of ClickHouse."""

from __future__ import annotations

import uuid

ORDER_BY = {
    "neurons": "neuron_id",
    "synapses": "pre_neuron_id, post_neuron_id, synapse_class, neuropil, weight",
}


def dataset_rows(client, database: str, table: str, dataset_id: uuid.UUID) -> list[dict]:
    """Every row of one dataset in a canonical table, without dataset_id, in a fixed order."""
    result = client.query_arrow(
        f"SELECT * EXCEPT (dataset_id) FROM {database}.{table} WHERE dataset_id = {{ds:UUID}} ORDER BY {ORDER_BY[table]}",
        parameters={"ds": str(dataset_id)},
    )
    rows = result.to_pylist()
    for row in rows:
        if "attributes" in row:
            row["attributes"] = dict(row["attributes"])
        for key, value in list(row.items()):
            if isinstance(value, bytes):  # LowCardinality/String may come back as binary
                row[key] = value.decode()
    return rows
