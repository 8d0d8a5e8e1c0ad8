"""Importing a dataset's neurons and synapses: the path every import mode goes through.

Both sources are checked before anything is written, so bad input leaves the previous good
data and its state untouched. The synapses are filtered against the neurons that are actually
in the warehouse for the dataset, through `filter_to_annotated_endpoints`.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
from clickhouse_connect.driver.client import Client

from connectome_assets.connectome.catalog import DatasetEntry
from connectome_assets.connectome.filtering import AnnotatedNeuronSet, EndpointFilterStats, filter_to_annotated_endpoints
from connectome_assets.connectome.sources import SourceModel
from connectome_assets.connectome.sources.base import ConnectionStream
from connectome_assets.connectome.streaming import ordered_parallel_map
from connectome_assets.metadata.store import MetadataStore, UnknownDatasetError
from connectome_assets.progress import Progress, discard
from connectome_assets.warehouse.schema import check_identifier, ensure_schema
from connectome_assets.warehouse.upload import Chunks, UploadResult, upload_table_atomically


class NeuronsNotUploadedError(RuntimeError):
    pass


@dataclass(frozen=True)
class NeuronImport:
    dataset_id: uuid.UUID
    source_version: str
    rows_written: int
    progress: dict[str, Any]  # Progress.finish() of the whole import: rows, batches, seconds, rows_per_second


@dataclass(frozen=True)
class SynapseImport:
    dataset_id: uuid.UUID
    source_version: str
    annotated_neurons: int
    filter: EndpointFilterStats
    rows_written: int
    inserts: int
    progress: dict[str, Any]  # Progress.finish() of the whole import, counting source rows read: rows, batches, seconds, rows_per_second


def import_neurons(entry: DatasetEntry, client: Client, database: str, state: MetadataStore, report: Callable[[str], Any] = discard) -> NeuronImport:
    progress = Progress(f"{entry.name} neurons", report)
    model = entry.source_model()
    version = model.fingerprint()
    neurons = model.read_neurons()
    model.check_connections()  # a bad weights file must stop the dataset before neurons change
    # Neurons are read whole and inserted at once (a list: a transient error retries the whole
    # attempt); one progress line when they are in, with the rate.
    dataset_id, result = upload_neurons(entry, [neurons], client, database, state, report)
    progress.advance(result.rows)
    return NeuronImport(dataset_id, version, result.rows, progress.finish())


def upload_neurons(
    entry: DatasetEntry, neurons: Chunks | Callable[[], Chunks], client: Client, database: str, state: MetadataStore, report: Callable[[str], Any] = discard
) -> tuple[uuid.UUID, UploadResult]:
    """Canonical neuron rows of a dataset swapped in atomically: every import mode's last step.

    `neurons` may be a one-shot iterator (rows still arriving over Flight): the table is claimed
    first, so a stream that breaks leaves the previous rows and a `failed` state."""
    dataset_id = state.ensure_dataset(entry.name, entry.model, entry.description)
    ensure_schema(client, database)
    return dataset_id, upload_table_atomically(client, database, "neurons", dataset_id, neurons, state, report=report)


def dataset_with_uploaded_neurons(name: str, state: MetadataStore) -> uuid.UUID:
    """The dataset's id once its neurons are uploaded: the universe synapses are filtered against."""
    dataset_id = state.dataset_id(name)
    neurons_state = state.table_state(dataset_id, "neurons")
    if neurons_state is None or neurons_state.upload_state != "uploaded":
        shown = "never uploaded" if neurons_state is None else f"'{neurons_state.upload_state}'"
        raise NeuronsNotUploadedError(f"dataset {name!r}: neurons are {shown}; synapses are filtered against the uploaded neurons, so neurons come first")
    return dataset_id


class ReceivedTableNotReadyError(RuntimeError):
    """A table of a flight dataset whose last upload did not complete (it failed, or is running)."""


@dataclass(frozen=True)
class ReceivedTable:
    """The rows a flight dataset's table holds: those of its last completed upload."""

    dataset_id: uuid.UUID
    table: str
    rows: int
    uploaded_at: dt.datetime
    upload_id: str
    summary: dict[str, Any]  # what that upload read and dropped (the endpoint filter's counts for synapses)

    @property
    def version(self) -> str:
        return f"received-{self.upload_id}"


def received_table(name: str, table: str, state: MetadataStore) -> ReceivedTable | None:
    """What a table of a dataset whose rows arrive over Flight holds, from `dataset_table_state`: the
    last completed upload, or None before the first one.

    Only an 'uploaded' state describes the table (the blocking checks require it), so a last upload
    that failed or is still running raises ReceivedTableNotReadyError with what to do."""
    try:
        dataset_id = state.dataset_id(name)
    except UnknownDatasetError:
        return None
    found = state.table_state(dataset_id, table)
    if found is None or found.upload_state == "pending":
        return None
    where = f"dataset {name!r}: the last Flight upload of {table}"
    kept = f"the warehouse keeps the {found.row_count} rows uploaded at {found.uploaded_at:%Y-%m-%d %H:%M:%S} UTC" if found.uploaded_at else "the table has no rows yet"
    if found.upload_state == "failed":
        raise ReceivedTableNotReadyError(f"{where} failed ({found.error_message}); {kept}; send the table again with `connectome flight upload`")
    if found.upload_state == "uploading":
        raise ReceivedTableNotReadyError(f"{where} is still running (upload {found.upload_id} by {found.upload_owner}); {kept}; materialize again once it completes")
    return ReceivedTable(dataset_id, table, found.row_count or 0, found.uploaded_at, found.upload_id or "", dict(found.summary or {}))


def annotated_neuron_set(client: Client, database: str, dataset_id: uuid.UUID) -> AnnotatedNeuronSet:
    """The dataset's neuron ids as uploaded: the universe connections are filtered against."""
    db = check_identifier(database)
    ids = client.query_arrow(f"SELECT neuron_id FROM {db}.neurons WHERE dataset_id = {{ds:UUID}}", parameters={"ds": str(dataset_id)})
    return AnnotatedNeuronSet(ids.column("neuron_id"))


def counted(batches: Iterable[pa.RecordBatch | pa.Table], progress: Progress) -> Iterator[pa.RecordBatch | pa.Table]:
    """The batches unchanged; each one advances `progress` by its rows as it is taken."""
    for batch in batches:
        progress.advance(batch.num_rows)
        yield batch


def annotated_connections(
    model: SourceModel, annotated: AnnotatedNeuronSet, stats: EndpointFilterStats, progress: Progress | None = None
) -> Iterator[pa.RecordBatch]:
    """The source's connections through the endpoint filter, canonical: what `synapses` holds.

    `progress` counts the source rows as they are read (before the filter drops any).
    """
    return filtered_connections(model.connection_stream(), annotated, stats, progress)


def filtered_connections(
    stream: ConnectionStream, annotated: AnnotatedNeuronSet, stats: EndpointFilterStats, progress: Progress | None = None
) -> Iterator[pa.RecordBatch]:
    """Raw connection batches through the endpoint filter, then only the kept rows made canonical."""
    batches = stream.batches if progress is None else counted(stream.batches, progress)
    kept = filter_to_annotated_endpoints(batches, annotated, stats, stream.pre_column, stream.post_column)
    return ordered_parallel_map(stream.canonical, kept)


@dataclass(frozen=True)
class SynapseUpload:
    annotated_neurons: int
    filter: EndpointFilterStats
    result: UploadResult
    progress: dict[str, Any]


def import_synapses(entry: DatasetEntry, client: Client, database: str, state: MetadataStore, report: Callable[[str], Any] = discard) -> SynapseImport:
    model = entry.source_model()
    version = model.fingerprint()
    model.check_connections()
    total = model.connection_rows()
    dataset_id = dataset_with_uploaded_neurons(entry.name, state)
    upload = upload_synapses(entry.name, dataset_id, model.connection_stream, client, database, state, report, total=total, restartable=True)
    return SynapseImport(dataset_id, version, upload.annotated_neurons, upload.filter, upload.result.rows, upload.result.inserts, upload.progress)


def upload_synapses(
    name: str,
    dataset_id: uuid.UUID,
    connections: Callable[[], ConnectionStream],
    client: Client,
    database: str,
    state: MetadataStore,
    report: Callable[[str], Any] = discard,
    *,
    total: int | None = None,
    restartable: bool,
) -> SynapseUpload:
    """Connections filtered against the dataset's neurons in the warehouse, swapped in atomically:
    every import mode's path to `synapses`.

    `restartable`: `connections` opens the source afresh on each call, so a transient error retries
    the whole attempt. Rows arriving over Flight can be read once: one attempt, never a partial retry.
    """
    ensure_schema(client, database)
    annotated = annotated_neuron_set(client, database, dataset_id)
    attempts: list[tuple[EndpointFilterStats, Progress]] = []

    def read_from_the_start() -> Iterator[pa.RecordBatch]:
        # A fresh stream per upload attempt; the counts are the last attempt's. Rows are read,
        # filtered and inserted as one pipeline, so the read rate is the import's rate.
        attempts.append((EndpointFilterStats(), Progress(f"{name} synapses", report, total=total)))
        return filtered_connections(connections(), annotated, *attempts[-1])

    def read_once() -> Iterator[pa.RecordBatch]:
        yield from read_from_the_start()  # opened when the upload, holding the claim, first reads

    def summary() -> dict[str, Any]:
        return {**attempts[-1][0].summary(), "annotated_neurons": annotated.size}

    chunks = read_from_the_start if restartable else read_once()
    result = upload_table_atomically(client, database, "synapses", dataset_id, chunks, state, report=report, summary=summary)
    stats, progress = attempts[-1]
    return SynapseUpload(annotated.size, stats, result, progress.finish())
