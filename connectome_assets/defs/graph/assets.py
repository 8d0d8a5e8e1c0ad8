"""Graph products of each dataset partition. Thin: `graph.bottleneck` does the work."""

import dagster as dg
from pydantic import Field

from connectome_assets.defs.connectome.assets import dataset_asset, failure, graph_edges
from connectome_assets.defs.resources import ClickHouseResource, MetadataResource
from connectome_assets.graph.bottleneck import (
    DEFAULT_MIN_WEIGHT,
    DEFAULT_SMALL_NETWORK_THRESHOLD,
    BottleneckParams,
    UnresolvedEndpointError,
    precompute_bottleneck_neurons,
)
from connectome_assets.graph.status import SourceNotUploadedError


class BottleneckConfig(dg.Config):
    min_weight: int = Field(default=DEFAULT_MIN_WEIGHT, description="Edges of vw_graph_edges with a smaller summed weight are left out.")
    small_network_threshold: int = Field(
        default=DEFAULT_SMALL_NETWORK_THRESHOLD, description="Graphs with at most this many neurons also get exact weighted betweenness."
    )


@dataset_asset(graph_edges, group_name="graph")
def bottleneck_neurons(
    context: dg.AssetExecutionContext, config: BottleneckConfig, clickhouse: ClickHouseResource, metadata: MetadataResource
) -> dg.MaterializeResult:
    """Bottleneck neurons of the dataset's neuron graph in `precomputed_bottleneck_neurons`, exact.

    Articulation points with the number of neurons each one cuts off from the largest connected
    component, for every graph; exact directed weighted betweenness for small graphs. Recomputed
    from the canonical rows and swapped in atomically; `precomputed_analysis_status` records the
    status, backend and the import it was computed from (docs/graph-products.md).
    """
    store = metadata.get_store()
    dataset_id = store.dataset_id(context.partition_key)
    try:
        params = BottleneckParams(min_weight=config.min_weight, small_network_threshold=config.small_network_threshold)
        result = precompute_bottleneck_neurons(clickhouse.get_client(), clickhouse.database, store, dataset_id, params, context.log.info)
    except (ValueError, UnresolvedEndpointError, SourceNotUploadedError) as exc:
        raise failure(exc) from exc
    product = result.product
    return dg.MaterializeResult(
        metadata={
            "dataset_id": str(dataset_id),
            "status": product.status,
            "backend": product.backend,
            "rows_written": dg.MetadataValue.int(result.rows_written),
            "neurons": dg.MetadataValue.int(product.neurons),
            "edges": dg.MetadataValue.int(product.edges),
            "self_loops_left_out": dg.MetadataValue.int(product.self_loops),
            "articulation_points": dg.MetadataValue.int(product.articulation_points),
            "components": dg.MetadataValue.int(product.components),
            "largest_component": dg.MetadataValue.int(product.largest_component),
            "top_bottlenecks": dg.MetadataValue.json(product.rows.slice(0, 10).select(["neuron_id", "name", "type", "separated_neurons", "betweenness"]).to_pylist()),
            "source_data_version": result.source_data_version,
            "seconds": dg.MetadataValue.float(round(result.seconds, 3)),
            "phase_seconds": dg.MetadataValue.json({phase: round(seconds, 3) for phase, seconds in result.phase_seconds.items()}),
            "read": dg.MetadataValue.json(result.read),
        },
        data_version=dg.DataVersion(result.source_data_version),
    )
