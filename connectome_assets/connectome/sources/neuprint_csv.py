"""`neuprint_csv`: hemibrain-style neuPrint CSV exports.

Sources: `neurons` (traced-neurons.csv: bodyId,type,instance) and `connections`
(traced-total-connections.csv: bodyId_pre,bodyId_post,weight). Gzipped files (.gz) work too.
"""

from __future__ import annotations

import pyarrow as pa

from connectome_assets.connectome.sources.base import (
    ConnectionStream,
    SourceModel,
    canonical_connections,
    canonical_neurons,
    iter_csv_batches,
    open_csv,
    read_csv_table,
)

NEURON_COLUMNS = {"type": "type", "instance": "instance", "name": "name", "status": "status", "somaSide": "soma_side"}
CONNECTION_COLUMNS = ("bodyId_pre", "bodyId_post", "weight")
CONNECTION_TYPES = {"bodyId_pre": pa.uint64(), "bodyId_post": pa.uint64(), "weight": pa.int64()}


class NeuprintCsv(SourceModel):
    name = "neuprint_csv"
    required_sources = ("neurons", "connections")

    def read_neurons(self) -> pa.Table:
        uri = self.sources["neurons"]
        table = read_csv_table(uri, {"bodyId": pa.uint64()}, ["bodyId"])
        text = {canonical: table[source] for source, canonical in NEURON_COLUMNS.items() if source in table.column_names}
        if "name" not in text and "instance" in text:
            text["name"] = text["instance"]
        extra = {c: table[c] for c in table.column_names if c != "bodyId" and c not in NEURON_COLUMNS}
        return canonical_neurons(uri, table["bodyId"], "bodyId", text, extra)

    def check_connections(self) -> None:
        open_csv(self.sources["connections"], CONNECTION_TYPES, CONNECTION_COLUMNS)

    def connection_stream(self) -> ConnectionStream:
        uri = self.sources["connections"]

        def canonical(batch: pa.RecordBatch) -> pa.RecordBatch:
            return canonical_connections(
                uri, batch.column("bodyId_pre"), batch.column("bodyId_post"), batch.column("weight"), CONNECTION_COLUMNS
            )

        batches = iter_csv_batches(open_csv(uri, CONNECTION_TYPES, CONNECTION_COLUMNS), uri)
        return ConnectionStream(batches, "bodyId_pre", "bodyId_post", canonical)
