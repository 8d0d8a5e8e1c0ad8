"""The Flight ingest client (`connectome flight upload`): one DoPut stream per table."""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.flight as flight

from connectome_assets.connectome.drop_reasons import dropped_by_reason
from connectome_assets.flight.protocol import FLIGHT_BATCH_ROWS, end_of_table, parse_message


@dataclass(frozen=True)
class FlightUpload:
    """Rows sent against what the server says it received, accepted and dropped."""

    dataset: str
    table: str
    rows_sent: int
    batches_sent: int
    answer: dict[str, Any]

    @property
    def rows_accepted(self) -> int:
        return int(self.answer["rows_accepted"])

    @property
    def rows_dropped(self) -> int:
        return int(self.answer["rows_dropped"])

    def summary(self) -> str:
        reasons = dropped_by_reason(self.answer)
        dropped = f"dropped {self.rows_dropped:,}" + (f" ({reasons})" if reasons else "")
        return f"{self.dataset}/{self.table}: sent {self.rows_sent:,} rows in {self.batches_sent} batches; server received {self.answer['rows_received']:,}, accepted {self.rows_accepted:,}, {dropped}"


def flight_batches(batches: Iterable[pa.RecordBatch], rows: int = FLIGHT_BATCH_ROWS) -> Iterator[pa.RecordBatch]:
    """Batches of at most `rows` rows: small ones coalesced, large ones sliced, so a table is a few
    large messages rather than tens of thousands of small ones."""
    if not 0 < rows <= FLIGHT_BATCH_ROWS:
        raise ValueError(f"Flight batches hold 1 to {FLIGHT_BATCH_ROWS} rows, not {rows}")
    pending: list[pa.RecordBatch] = []
    count = 0
    for batch in batches:
        start = 0
        while start < batch.num_rows:
            piece = batch.slice(start, rows - count)
            pending.append(piece)
            count += piece.num_rows
            start += piece.num_rows
            if count == rows:
                yield pa.concat_batches(pending)
                pending, count = [], 0
    if pending:
        yield pa.concat_batches(pending)


def server_sentence(exc: Exception) -> str:
    """The server's own sentence of a Flight error, without the detail and gRPC context pyarrow appends."""
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    for tail in (". Detail:", ". gRPC client debug context:"):
        text = text.split(tail)[0]
    return text


def call_options(token: str, timeout_seconds: float) -> flight.FlightCallOptions:
    return flight.FlightCallOptions(timeout=timeout_seconds, headers=[(b"authorization", f"Bearer {token}".encode())])


def upload_to_flight(
    url: str,
    dataset: str,
    table: str,
    data: pa.Table | Iterable[pa.RecordBatch],
    token: str,
    *,
    schema: pa.Schema | None = None,
    timeout_seconds: float = 7200.0,
    batch_rows: int = FLIGHT_BATCH_ROWS,
) -> FlightUpload:
    """Send a table's rows (a pyarrow Table, or record batches) in ONE DoPut stream, closed by the
    end-of-table marker, and return the server's answer. Should `data` fail half way, the stream is
    closed without the marker and the server keeps the previous rows (state `failed`)."""
    if isinstance(data, pa.Table):
        schema, batches = data.schema, iter(data.to_batches())
    else:
        batches = iter(data)
        if schema is None:
            first = next(batches, None)
            if first is None:
                raise ValueError(f"{dataset}/{table}: no record batches to send and no schema given")
            schema, batches = first.schema, itertools.chain([first], batches)
    sent = count = 0
    with flight.connect(url) as client:
        writer, answers = client.do_put(flight.FlightDescriptor.for_path(dataset, table), schema, options=call_options(token, timeout_seconds))
        try:
            for batch in flight_batches(batches, batch_rows):
                writer.write_batch(batch)
                sent += batch.num_rows
                count += 1
            writer.write_metadata(end_of_table(sent))
            writer.done_writing()
            answer = answers.read()
        except BaseException:
            # Closed without the marker: the server refuses the stream, which is the point; the
            # error to report is the one that stopped us.
            with contextlib.suppress(flight.FlightError, pa.ArrowException):
                writer.close()
            raise
        writer.close()
    if answer is None:
        raise RuntimeError(f"{dataset}/{table}: the Flight server closed the upload without an answer")
    return FlightUpload(dataset, table, sent, count, parse_message(answer.to_pybytes()))
