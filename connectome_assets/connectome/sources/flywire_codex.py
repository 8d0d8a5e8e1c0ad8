"""`flywire_codex`: FlyWire Codex downloads.

Sources: `neurons` (neurons.csv.gz: root_id, group, nt_type, …), optional `classification`
(classification.csv.gz: root_id, flow, super_class, class, sub_class, cell_type, side, …) and
`connections` (connections.csv.gz: pre_root_id, post_root_id, neuropil, syn_count, nt_type —
one row per pair and neuropil). The connection's nt_type is kept as its synapse class.
"""

from __future__ import annotations

import pyarrow as pa

from connectome_assets.connectome.sources.base import (
    ConnectionStream,
    SourceModel,
    align_side_table,
    canonical_connections,
    canonical_neurons,
    iter_csv_batches,
    open_csv,
    read_csv_table,
)

CLASSIFICATION_COLUMNS = {"cell_type": "type", "class": "class", "super_class": "superclass", "side": "soma_side"}
CONNECTION_COLUMNS = ("pre_root_id", "post_root_id", "syn_count")
CONNECTION_TYPES = {"pre_root_id": pa.uint64(), "post_root_id": pa.uint64(), "syn_count": pa.int64(), "neuropil": pa.string(), "nt_type": pa.string()}


class FlywireCodex(SourceModel):
    name = "flywire_codex"
    required_sources = ("neurons", "connections")
    optional_sources = ("classification",)

    def read_neurons(self) -> pa.Table:
        uri = self.sources["neurons"]
        table = read_csv_table(uri, {"root_id": pa.uint64()}, ["root_id"])
        text: dict[str, pa.ChunkedArray] = {}
        extra = {c: table[c] for c in table.column_names if c != "root_id"}
        if "classification" in self.sources:
            class_uri = self.sources["classification"]
            classes = read_csv_table(class_uri, {"root_id": pa.uint64()}, ["root_id"])
            ids = canonical_neurons(uri, table["root_id"], "root_id", {}, {})["neuron_id"].combine_chunks()
            aligned = align_side_table(class_uri, ids, classes, "root_id")
            for column in aligned.column_names:
                if column in CLASSIFICATION_COLUMNS:
                    text[CLASSIFICATION_COLUMNS[column]] = aligned[column]
                else:
                    extra[column] = aligned[column]
        return canonical_neurons(uri, table["root_id"], "root_id", text, extra)

    def check_connections(self) -> None:
        open_csv(self.sources["connections"], CONNECTION_TYPES, CONNECTION_COLUMNS)

    def connection_stream(self) -> ConnectionStream:
        uri = self.sources["connections"]
        reader = open_csv(uri, CONNECTION_TYPES, CONNECTION_COLUMNS)
        names = reader.schema.names

        def canonical(batch: pa.RecordBatch) -> pa.RecordBatch:
            return canonical_connections(
                uri,
                batch.column("pre_root_id"),
                batch.column("post_root_id"),
                batch.column("syn_count"),
                CONNECTION_COLUMNS,
                synapse_class=batch.column("nt_type") if "nt_type" in names else None,
                neuropil=batch.column("neuropil") if "neuropil" in names else None,
            )

        return ConnectionStream(iter_csv_batches(reader, uri), "pre_root_id", "post_root_id", canonical)
