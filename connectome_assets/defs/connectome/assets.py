"""Connectome assets, one partition per dataset. Thin: the library does the work."""

from collections.abc import Iterator, Mapping
from typing import Any

import dagster as dg
from dagster._core.definitions.data_version import DATA_VERSION_TAG

from connectome_assets.connectome.errors import SourceError
from connectome_assets.connectome.ingest import NeuronsNotUploadedError, ReceivedTableNotReadyError, import_neurons, import_synapses, received_table
from connectome_assets.connectome.sources.flight import FlightSource
from connectome_assets.defs.automation import BEHIND_VERIFIED_UPSTREAM, OBSERVE_ON_CRON
from connectome_assets.defs.connectome.partitions import datasets_partitions
from connectome_assets.defs.resources import CatalogResource, ClickHouseResource, MetadataResource
from connectome_assets.metadata.store import MetadataStore
from connectome_assets.warehouse.graph_edges import edge_summary
from connectome_assets.warehouse.upload import UploadVerificationError

_ACTIONABLE = (SourceError, NeuronsNotUploadedError, UploadVerificationError, ReceivedTableNotReadyError)


def dataset_asset(
    *upstream: dg.AssetsDefinition | dg.SourceAsset | dg.AssetKey,
    group_name: str = "connectome",
    kinds: frozenset[str] = frozenset({"clickhouse"}),
    automation_condition: dg.AutomationCondition | None = BEHIND_VERIFIED_UPSTREAM,
    output_required: bool = True,
):
    """An asset of one dataset partition that reads or writes ClickHouse (one step at a time per pool),
    materialized by automation behind its upstream's blocking checks unless told otherwise.
    `output_required=False`: a run may have nothing to record for the partition (nothing runs below it then)."""
    return dg.asset(
        output_required=output_required,
        partitions_def=datasets_partitions,
        deps=list(upstream),
        pool="clickhouse",
        group_name=group_name,
        kinds=set(kinds),
        automation_condition=automation_condition,
    )


def failure(exc: Exception) -> dg.Failure:
    """An asset failure whose description is the one sentence a person acts on."""
    return dg.Failure(description=str(exc), allow_retries=False)


def progress_metadata(figures: dict[str, Any]) -> dict[str, dg.MetadataValue]:
    """A long step's seconds, rate and steps from `Progress.finish` (the asset names its amount itself)."""
    rate = next(name for name in figures if name.endswith("_per_second"))
    amount = rate.removesuffix("_per_second")
    return {
        name: dg.MetadataValue.float(value) if isinstance(value, float) else dg.MetadataValue.int(value)
        for name, value in figures.items()
        if name != amount and value is not None
    }


@dg.observable_source_asset(
    partitions_def=datasets_partitions,
    group_name="connectome",
    automation_condition=OBSERVE_ON_CRON,
    description="A dataset's source files as its catalog entry names them; the data version is the entry's digest and the files'"
    " fingerprint (size and modification time), or for a `flight` dataset when each of its tables last completed an upload."
    " Observed on a schedule (defs/automation.py) and by the catalog and Flight upload sensors.",
)
def dataset_sources(context: dg.OpExecutionContext, catalog: CatalogResource, metadata: MetadataResource) -> dg.DataVersionsByPartition:
    versions: dict[str, str] = {}
    state = metadata.get_store()
    for name in context.instance.get_dynamic_partitions(datasets_partitions.name):
        try:
            versions[name] = catalog.sources_version(name, state)
        except SourceError as exc:
            context.log.warning(str(exc))
    return dg.DataVersionsByPartition(versions)


def sources_observation(catalog: CatalogResource, state: MetadataStore, name: str) -> dg.AssetObservation:
    """An observation of one dataset's `dataset_sources`, as the sensors and `connectome dataset add`
    report it when an entry is new or edited or a Flight upload completes (raises SourceError if the
    entry does not resolve)."""
    return dg.AssetObservation(asset_key=dataset_sources.key, partition=name, tags={DATA_VERSION_TAG: catalog.sources_version(name, state)})


def endpoint_filter_metadata(summary: Mapping[str, Any]) -> dict[str, dg.MetadataValue]:
    """The endpoint filter's counts (`EndpointFilterStats.summary`, as `dataset_table_state` records
    them) as materialization metadata."""
    return {name: dg.MetadataValue.json(value) if isinstance(value, list) else dg.MetadataValue.int(value) for name, value in summary.items()}


def received_upload(context: dg.AssetExecutionContext, metadata: MetadataResource, table: str) -> Iterator[dg.MaterializeResult]:
    """For a dataset whose rows arrive over Flight: record the table's last completed upload (the rows
    are already swapped in; the blocking checks then verify them). Nothing before the first upload."""
    received = received_table(context.partition_key, table, metadata.get_store())
    if received is None:
        context.log.info(f"dataset {context.partition_key!r}: no Flight upload of {table} has completed yet; nothing to record until one does")
        return
    yield dg.MaterializeResult(
        metadata={
            "dataset_id": str(received.dataset_id),
            "source_model": FlightSource.name,
            "rows_written": dg.MetadataValue.int(received.rows),
            "uploaded_at": dg.MetadataValue.timestamp(received.uploaded_at),
            "upload_id": received.upload_id,
            **endpoint_filter_metadata(received.summary),
        },
        data_version=dg.DataVersion(received.version),
    )


@dataset_asset(dataset_sources, output_required=False)
def neurons(
    context: dg.AssetExecutionContext, clickhouse: ClickHouseResource, metadata: MetadataResource, catalog: CatalogResource
) -> Iterator[dg.MaterializeResult]:
    """The dataset's annotated neurons in ClickHouse `neurons`: the dataset's neuron universe.

    Both source files are checked before anything is written; the rows are swapped in
    atomically and `dataset_table_state` then records the whole table. For a `flight` dataset the
    rows arrive over Arrow Flight: this records its last completed upload.
    """
    try:
        entry = catalog.entry(context.partition_key)
        if entry.source_model().received_tables:
            yield from received_upload(context, metadata, "neurons")
            return
        result = import_neurons(entry, clickhouse.get_client(), clickhouse.database, metadata.get_store(), context.log.info)
    except _ACTIONABLE as exc:
        raise failure(exc) from exc
    yield dg.MaterializeResult(
        metadata={
            "dataset_id": str(result.dataset_id),
            "source_model": entry.model,
            "rows_written": dg.MetadataValue.int(result.rows_written),
            **progress_metadata(result.progress),
            "source_version": result.source_version,
        },
        data_version=dg.DataVersion(result.source_version),
    )


@dataset_asset(neurons, output_required=False)
def synapses(
    context: dg.AssetExecutionContext, clickhouse: ClickHouseResource, metadata: MetadataResource, catalog: CatalogResource
) -> Iterator[dg.MaterializeResult]:
    """Connection rows filtered to annotated pre AND post neurons, in ClickHouse `synapses`.

    Rows with an unannotated endpoint are dropped and counted by reason, never turned into
    placeholder neurons. Streams record batches; swapped in atomically. For a `flight` dataset the
    Flight server ran the same filter and upload: this records its last completed upload.
    """
    try:
        entry = catalog.entry(context.partition_key)
        if entry.source_model().received_tables:
            yield from received_upload(context, metadata, "synapses")
            return
        result = import_synapses(entry, clickhouse.get_client(), clickhouse.database, metadata.get_store(), context.log.info)
    except _ACTIONABLE as exc:
        raise failure(exc) from exc
    yield dg.MaterializeResult(
        metadata={
            "dataset_id": str(result.dataset_id),
            "annotated_neurons": dg.MetadataValue.int(result.annotated_neurons),
            **endpoint_filter_metadata(result.filter.summary()),
            "rows_written": dg.MetadataValue.int(result.rows_written),
            "inserts": dg.MetadataValue.int(result.inserts),
            **progress_metadata(result.progress),
        },
        data_version=dg.DataVersion(result.source_version),
    )


@dataset_asset(synapses)
def graph_edges(context: dg.AssetExecutionContext, clickhouse: ClickHouseResource, metadata: MetadataResource) -> dg.MaterializeResult:
    """The dataset's canonical edge stream `vw_graph_edges` (one row per directed neuron pair,
    weights summed over synapse classes and neuropils), summarised for the products built on it.
    """
    dataset_id = metadata.get_store().dataset_id(context.partition_key)
    summary = edge_summary(clickhouse.get_client(), clickhouse.database, dataset_id)
    return dg.MaterializeResult(
        metadata={
            "dataset_id": str(dataset_id),
            "edges": dg.MetadataValue.int(summary.edges),
            "total_weight": dg.MetadataValue.int(summary.total_weight),
            "self_loops": dg.MetadataValue.int(summary.self_loops),
            "neurons_with_edges": dg.MetadataValue.int(summary.neurons_with_edges),
            "isolated_neurons": dg.MetadataValue.int(summary.isolated_neurons),
        }
    )
