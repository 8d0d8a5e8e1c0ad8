"""`flight`: a dataset with no source files; its rows arrive over Arrow Flight (`connectome.flight`).

Canonical columns of what a client sends: `neurons` carries `neuron_id` and any annotation
columns (the named text columns of NEURON_SCHEMA are kept as such, every other column goes to
`attributes`); `synapses` carries `pre_neuron_id`, `post_neuron_id`, `weight` and optionally
`synapse_class` and `neuropil`. The received rows go through the same canonical assembly, endpoint
filter and atomic upload as a file-based model's (`connectome.ingest`).
"""

from __future__ import annotations

from collections.abc import Iterator

import pyarrow as pa

from connectome_assets.connectome.errors import SourceError
from connectome_assets.connectome.schemas import NEURON_TEXT_COLUMNS
from connectome_assets.connectome.sources.base import (
    ConnectionStream,
    SourceModel,
    canonical_connections,
    canonical_neurons,
    check_column_kinds,
    require_columns,
)

NEURON_ID_COLUMN = "neuron_id"
CONNECTION_COLUMNS = ("pre_neuron_id", "post_neuron_id", "weight")
OPTIONAL_CONNECTION_COLUMNS = ("synapse_class", "neuropil")
FLIGHT_TABLES = ("neurons", "synapses")


class FlightSource(SourceModel):
    name = "flight"
    received_tables = FLIGHT_TABLES

    def _not_from_files(self) -> SourceError:
        return SourceError(
            self.location,
            "is a 'flight' dataset: its neurons and synapses arrive over Arrow Flight (`connectome flight upload`), not from source files",
        )

    def read_neurons(self) -> pa.Table:
        raise self._not_from_files()

    def check_connections(self) -> None:
        raise self._not_from_files()

    def connection_stream(self) -> ConnectionStream:
        raise self._not_from_files()


def check_received_schema(location: str, table: str, schema: pa.Schema) -> None:
    """Refuse, before any row is read, a stream whose columns cannot be the named table."""
    if table == "neurons":
        require_columns(location, schema.names, [NEURON_ID_COLUMN])
        check_column_kinds(location, schema, [NEURON_ID_COLUMN])
    elif table == "synapses":
        require_columns(location, schema.names, CONNECTION_COLUMNS)
        check_column_kinds(location, schema, CONNECTION_COLUMNS[:2], CONNECTION_COLUMNS[2:])
        extra = sorted(set(schema.names) - set(CONNECTION_COLUMNS) - set(OPTIONAL_CONNECTION_COLUMNS))
        if extra:
            raise SourceError(location, f"has column(s) {', '.join(extra)} that synapses cannot hold (allowed: {', '.join(CONNECTION_COLUMNS + OPTIONAL_CONNECTION_COLUMNS)})")
    else:
        raise SourceError(location, f"names table {table!r}; a flight dataset receives {' or '.join(FLIGHT_TABLES)}")


def received_neurons(location: str, table: pa.Table) -> pa.Table:
    """The received neuron rows as NEURON_SCHEMA (duplicate or invalid ids are an error)."""
    text = {c: table[c] for c in NEURON_TEXT_COLUMNS if c in table.column_names}
    extra = {c: table[c] for c in table.column_names if c != NEURON_ID_COLUMN and c not in NEURON_TEXT_COLUMNS}
    return canonical_neurons(location, table[NEURON_ID_COLUMN], NEURON_ID_COLUMN, text, extra)


def received_connections(location: str, batches: Iterator[pa.RecordBatch]) -> ConnectionStream:
    """Received connection batches as a ConnectionStream: the filter probes the raw id columns and
    only the kept rows are made canonical, exactly as for a file-based model."""

    def canonical(batch: pa.RecordBatch) -> pa.RecordBatch:
        names = batch.schema.names
        return canonical_connections(
            location,
            batch.column("pre_neuron_id"),
            batch.column("post_neuron_id"),
            batch.column("weight"),
            CONNECTION_COLUMNS,
            synapse_class=batch.column("synapse_class") if "synapse_class" in names else None,
            neuropil=batch.column("neuropil") if "neuropil" in names else None,
        )

    return ConnectionStream(batches, "pre_neuron_id", "post_neuron_id", canonical)
