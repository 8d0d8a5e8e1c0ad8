"""Summary of a dataset's canonical edge stream (vw_graph_edges)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from clickhouse_connect.driver.client import Client

from connectome_assets.warehouse.schema import check_identifier


@dataclass(frozen=True)
class EdgeSummary:
    edges: int
    total_weight: int
    self_loops: int
    neurons_with_edges: int
    isolated_neurons: int


def edge_summary(client: Client, database: str, dataset_id: uuid.UUID) -> EdgeSummary:
    db = check_identifier(database)
    params = {"ds": str(dataset_id)}
    edges, total, loops = client.query(
        f"""SELECT count(), sum(weight), countIf(pre_neuron_id = post_neuron_id)
            FROM {db}.vw_graph_edges WHERE dataset_id = {{ds:UUID}}""",
        parameters=params,
    ).result_rows[0]
    with_edges, neurons = client.query(
        f"""SELECT countIf(neuron_id IN (
                       SELECT pre_neuron_id FROM {db}.synapses WHERE dataset_id = {{ds:UUID}}
                       UNION ALL SELECT post_neuron_id FROM {db}.synapses WHERE dataset_id = {{ds:UUID}})),
                   count()
            FROM {db}.neurons WHERE dataset_id = {{ds:UUID}}""",
        parameters=params,
    ).result_rows[0]
    return EdgeSummary(int(edges), int(total or 0), int(loops), int(with_edges), int(neurons) - int(with_edges))
