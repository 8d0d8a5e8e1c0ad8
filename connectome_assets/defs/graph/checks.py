"""Blocking checks on graph products: nothing reads a product the check has not vouched for."""

import dagster as dg

from connectome_assets.defs.connectome.checks import blocking_dataset_check
from connectome_assets.defs.graph.assets import bottleneck_neurons
from connectome_assets.defs.resources import ClickHouseResource, MetadataResource
from connectome_assets.graph.bottleneck import verify_bottleneck_product


@blocking_dataset_check(bottleneck_neurons, "graph_products_present")
def graph_products_present(
    context: dg.AssetCheckExecutionContext, clickhouse: ClickHouseResource, metadata: MetadataResource
) -> dg.AssetCheckResult:
    """The product is current (computed from this import), has one row per neuron with an edge, and is
    empty only where the status says empty_graph / not_applicable and the graph truly has no edges."""
    verdict = verify_bottleneck_product(clickhouse.get_client(), clickhouse.database, metadata.get_store(), context.partition_key)
    status = verdict.status
    return dg.AssetCheckResult(
        passed=verdict.passed,
        severity=dg.AssetCheckSeverity.ERROR,
        description=verdict.problem or None,
        metadata={
            "status": status.status if status else "missing",
            "backend": status.backend if status else "",
            "status_row_count": dg.MetadataValue.int(status.row_count) if status else dg.MetadataValue.null(),
            "product_rows": dg.MetadataValue.int(verdict.product_rows),
            "graph_edges": dg.MetadataValue.int(verdict.graph_edges),
            "neurons_with_an_edge": dg.MetadataValue.int(verdict.connected_neurons),
        },
    )


graph_checks = [graph_products_present]
