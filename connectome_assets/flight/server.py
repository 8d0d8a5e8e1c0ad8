"""The Flight ingest server (`connectome flight serve`).

`do_put` checks the caller, the dataset, the table and the stream's schema, then hands the
incoming batches, as a one-shot iterator, to the same upload functions as the direct path
(`upload_neurons`, `upload_synapses`): the table is claimed before the first batch is read, so a
second DoPut of a table mid-upload is refused (`UploadInProgressError`), and a stream that breaks
or ends without the end-of-table marker records `failed` and leaves the previous rows.

ClickHouse access: chDB allows one embedded client per process, and clickhouse-connect's chDB
backend is not safe for concurrent calls from gRPC's threads, so every call on it goes through
one lock (`SerializedClient`). Concurrent uploads interleave call by call; a server URL gets one
client per upload instead.
"""

from __future__ import annotations

import hmac
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.flight as flight
from clickhouse_connect.driver.client import Client

from connectome_assets.connectome.catalog import DatasetEntry, check_dataset_name, load_entry
from connectome_assets.connectome.errors import SourceError
from connectome_assets.connectome.ingest import NeuronsNotUploadedError, dataset_with_uploaded_neurons, upload_neurons, upload_synapses
from connectome_assets.connectome.sources.flight import FLIGHT_TABLES, FlightSource, check_received_schema, received_connections, received_neurons
from connectome_assets.flight.protocol import AUTH_MIDDLEWARE, END_OF_TABLE, parse_message
from connectome_assets.metadata.store import MetadataStore, UnknownDatasetError, UploadInProgressError
from connectome_assets.registry.errors import Forbidden, Unauthorized
from connectome_assets.registry.service import Audit, Principal, Registry, bearer_token
from connectome_assets.settings import Settings
from connectome_assets.warehouse.client import connect, is_embedded
from connectome_assets.warehouse.upload import UploadVerificationError


class IncompleteStreamError(RuntimeError):
    """The DoPut stream did not end with the client's end-of-table marker, or its count differs."""


class SerializedClient:
    """A ClickHouse client whose every call holds one lock (see the module docstring)."""

    def __init__(self, client: Client) -> None:
        self._client = client
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._client, name)
        if not callable(attribute):
            return attribute

        def serialized(*args: Any, **kwargs: Any) -> Any:
            with self._lock:
                return attribute(*args, **kwargs)

        return serialized


@dataclass(frozen=True)
class Uploader:
    """Who is calling: a registry user, or the holder of the settings token (`principal` None)."""

    name: str
    principal: Principal | None

    def require_write(self, dataset: str) -> None:
        if self.principal is not None:
            # A dataset's datastack is its name.
            self.principal.require(dataset, "write", f"upload rows of dataset {dataset} over Flight")


class UploaderMiddleware(flight.ServerMiddleware):
    def __init__(self, uploader: Uploader) -> None:
        self.uploader = uploader


class BearerTokenAuth(flight.ServerMiddlewareFactory):
    """Every call needs `authorization: Bearer <token>`: the settings token (when configured), or a
    registry token (whose write grants are checked per dataset in `do_put`)."""

    def __init__(self, registry: Registry, settings_token: str) -> None:
        self.registry = registry
        self.settings_token = settings_token

    def start_call(self, info: flight.CallInfo, headers: dict[str, list[str]]) -> UploaderMiddleware:
        authorization = next(iter(headers.get("authorization", [])), None)
        token = bearer_token(authorization)
        if self.settings_token and token is not None and hmac.compare_digest(token.encode(), self.settings_token.encode()):
            return UploaderMiddleware(Uploader("holder of CONNECTOME_FLIGHT_TOKEN", None))
        try:
            principal = self.registry.authenticate(authorization, Audit("flight_upload"))
        except Unauthorized as exc:
            raise flight.FlightUnauthenticatedError(f"Flight call refused: {exc}") from None
        return UploaderMiddleware(Uploader(principal.name, principal))


def received_batches(reader: flight.MetadataRecordBatchReader, location: str, received: list[int]) -> Iterator[pa.RecordBatch]:
    """The batches of one DoPut stream, counting rows into `received[0]`; raises at the end unless
    the stream closed with the end-of-table marker for exactly the rows that arrived."""
    declared: int | None = None
    while True:
        try:
            chunk = reader.read_chunk()
        except StopIteration:
            break
        if chunk.data is not None and chunk.data.num_rows:
            if declared is not None:
                raise IncompleteStreamError(f"{location}: record batches arrived after the end-of-table marker")
            received[0] += chunk.data.num_rows
            yield chunk.data
        if chunk.app_metadata is not None:
            message = parse_message(chunk.app_metadata.to_pybytes())
            if message.get(END_OF_TABLE):
                declared = int(message.get("rows", -1))
    if declared is None:
        raise IncompleteStreamError(f"{location}: the stream ended after {received[0]} rows without the client's end-of-table marker; nothing was swapped in")
    if declared != received[0]:
        raise IncompleteStreamError(f"{location}: the client sent {declared} rows but {received[0]} arrived; nothing was swapped in")


def receive_table(
    entry: DatasetEntry, table: str, reader: flight.MetadataRecordBatchReader, client: Client, database: str, state: MetadataStore, location: str
) -> dict[str, Any]:
    """Upload one table from a DoPut stream through the direct path's functions; returns the answer."""
    received = [0]
    batches = received_batches(reader, location, received)
    if table == "neurons":

        def neuron_rows() -> Iterator[pa.Table]:
            # Neurons are few; their ids are checked unique across the whole stream.
            yield received_neurons(location, pa.Table.from_batches(list(batches), schema=reader.schema))

        _, result = upload_neurons(entry, neuron_rows(), client, database, state)
        return {"rows_received": received[0], "rows_accepted": result.rows, "rows_dropped": received[0] - result.rows}
    dataset_id = dataset_with_uploaded_neurons(entry.name, state)
    upload = upload_synapses(entry.name, dataset_id, lambda: received_connections(location, batches), client, database, state, restartable=False)
    stats = upload.filter
    return {
        "rows_received": received[0],
        "rows_accepted": upload.result.rows,
        "rows_dropped": stats.rows_dropped,
        "dropped_pre_missing": stats.dropped_pre_missing,
        "dropped_post_missing": stats.dropped_post_missing,
        "dropped_both_missing": stats.dropped_both_missing,
        "sample_unannotated_ids": stats.sample_unannotated_ids,
        "annotated_neurons": upload.annotated_neurons,
    }


class FlightIngestServer(flight.FlightServerBase):
    """Listens as soon as it is built (`port` tells which); `serve()` blocks until `shutdown()`."""

    def __init__(self, settings: Settings, state: MetadataStore, registry: Registry, location: str = "grpc://127.0.0.1:0") -> None:
        # Everything a call uses is set before the base class starts listening (it does at once).
        self.settings = settings
        self.state = state
        self._embedded = SerializedClient(connect(settings.clickhouse_url)) if is_embedded(settings.clickhouse_url) else None
        super().__init__(location, middleware={AUTH_MIDDLEWARE: BearerTokenAuth(registry, settings.flight.token)})

    def _client(self) -> Client:
        return self._embedded if self._embedded is not None else connect(self.settings.clickhouse_url)  # type: ignore[return-value]

    def _target(self, descriptor: flight.FlightDescriptor) -> tuple[DatasetEntry, str]:
        path = [part.decode() if isinstance(part, bytes) else part for part in (descriptor.path or [])]
        if descriptor.descriptor_type != flight.DescriptorType.PATH or len(path) != 2:
            raise pa.ArrowInvalid(f"Flight upload descriptor {path or descriptor.command!r} must be the path [dataset, table]")
        dataset, table = path
        if table not in FLIGHT_TABLES:
            raise pa.ArrowInvalid(f"Flight upload of dataset {dataset!r}: unknown table {table!r} (a flight dataset receives {' or '.join(FLIGHT_TABLES)})")
        try:
            check_dataset_name(dataset, "Flight upload")
            entry = load_entry(self.settings.catalog, dataset)
        except SourceError as exc:
            raise pa.ArrowInvalid(str(exc)) from None
        if entry.model != FlightSource.name:
            raise pa.ArrowInvalid(f"dataset {dataset!r} has source model '{entry.model}': its rows come from its source files, not over Flight")
        return entry, table

    def do_put(self, context: flight.ServerCallContext, descriptor: flight.FlightDescriptor, reader: flight.MetadataRecordBatchReader, writer: flight.FlightMetadataWriter) -> None:
        entry, table = self._target(descriptor)
        uploader: Uploader = context.get_middleware(AUTH_MIDDLEWARE).uploader
        try:
            uploader.require_write(entry.name)
        except Forbidden as exc:
            raise flight.FlightUnauthorizedError(str(exc)) from None
        location = f"Flight upload of {entry.name}/{table}"
        try:
            check_received_schema(location, table, reader.schema)
            answer = receive_table(entry, table, reader, self._client(), self.settings.clickhouse_database, self.state, location)
        except UploadInProgressError as exc:
            raise flight.FlightUnavailableError(f"{location} refused: {exc}") from None
        except (SourceError, NeuronsNotUploadedError, UnknownDatasetError, IncompleteStreamError, UploadVerificationError) as exc:
            raise pa.ArrowInvalid(str(exc)) from None
        writer.write(pa.py_buffer(json.dumps(answer).encode()))


def flight_server(settings: Settings, host: str = "127.0.0.1", port: int = 0) -> FlightIngestServer:
    """The ingest server on the settings' metadata database and warehouse, listening on host:port."""
    from connectome_assets.registry.config import registry_config

    state = MetadataStore(settings.metadata_url)
    state.migrate()
    return FlightIngestServer(settings, state, Registry(state, registry_config(settings)), f"grpc://{host}:{port}")
