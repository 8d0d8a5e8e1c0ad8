"""`flyem_feather`: male CNS / MANC release files from neuPrint's Feather exports.

Sources: `annotations` (body-annotations-*.feather), `weights` (connectome-weights-*.feather),
optional `neurotransmitters` (body-neurotransmitters-*.feather). The annotated bodies are the
dataset's neuron universe (runbook: the weights may name bodies outside it).
"""

from __future__ import annotations

from collections.abc import Iterator

import pyarrow as pa

from connectome_assets.connectome.sources.base import (
    ConnectionStream,
    SourceModel,
    align_side_table,
    canonical_connections,
    canonical_neurons,
    check_column_kinds,
    feather_row_count,
    iter_feather_batches,
    open_feather,
    read_feather_table,
    require_columns,
    with_integer_ids,
)

# Source column -> canonical column; everything else becomes an attribute.
ANNOTATION_COLUMNS = {
    "name": "name",
    "type": "type",
    "instance": "instance",
    "class": "class",
    "superclass": "superclass",
    "polarity": "polarity",
    "somaSide": "soma_side",
    "status": "status",
}
WEIGHT_COLUMNS = ("body_pre", "body_post", "weight")
# Optional per-row columns carried into the canonical synapse rows when a release has them.
OPTIONAL_WEIGHT_COLUMNS = {"synapse_class": "synapse_class", "roi": "neuropil"}


class FlyemFeather(SourceModel):
    name = "flyem_feather"
    required_sources = ("annotations", "weights")
    optional_sources = ("neurotransmitters",)

    def read_neurons(self) -> pa.Table:
        uri = self.sources["annotations"]
        table = read_feather_table(uri)
        require_columns(uri, table.column_names, ["bodyId"])
        check_column_kinds(uri, table.schema, ["bodyId"])
        text = {canonical: table[source] for source, canonical in ANNOTATION_COLUMNS.items() if source in table.column_names}
        if "name" not in text and "instance" in text:
            text["name"] = text["instance"]
        extra = {c: table[c] for c in table.column_names if c != "bodyId" and c not in ANNOTATION_COLUMNS}
        neurons = canonical_neurons(uri, table["bodyId"], "bodyId", text, extra)
        if "neurotransmitters" in self.sources:
            nt_uri = self.sources["neurotransmitters"]
            nt = read_feather_table(nt_uri)
            require_columns(nt_uri, nt.column_names, ["body"])
            check_column_kinds(nt_uri, nt.schema, ["body"])
            aligned = align_side_table(nt_uri, neurons["neuron_id"].combine_chunks(), nt, "body")
            extra.update({c: aligned[c] for c in aligned.column_names})
            neurons = canonical_neurons(uri, table["bodyId"], "bodyId", text, extra)
        return neurons

    def _weight_columns(self) -> list[str]:
        uri = self.sources["weights"]
        schema = open_feather(uri).schema
        require_columns(uri, schema.names, WEIGHT_COLUMNS)
        check_column_kinds(uri, schema, ["body_pre", "body_post"], ["weight"])
        return list(WEIGHT_COLUMNS) + [c for c in OPTIONAL_WEIGHT_COLUMNS if c in schema.names]

    def check_connections(self) -> None:
        self._weight_columns()

    def connection_rows(self) -> int | None:
        return feather_row_count(self.sources["weights"])

    def connection_stream(self) -> ConnectionStream:
        uri = self.sources["weights"]
        columns = self._weight_columns()

        def canonical(batch: pa.RecordBatch) -> pa.RecordBatch:
            optional = {OPTIONAL_WEIGHT_COLUMNS[c]: batch.column(c) for c in columns[3:]}
            return canonical_connections(
                uri, batch.column("body_pre"), batch.column("body_post"), batch.column("weight"), WEIGHT_COLUMNS, **optional
            )

        batches = (with_integer_ids(b, WEIGHT_COLUMNS[:2], uri) for b in iter_feather_batches(uri, columns))
        return ConnectionStream(batches, "body_pre", "body_post", canonical)


def write_flyem_feather_release(neurons: pa.Table, connections: Iterator[pa.RecordBatch], directory: str, release: str) -> dict[str, str]:
    """Write canonical rows as a neuPrint-style Feather release (the files this model reads).

    Lets any source (e.g. the cect connectomes in the demo) go through the male CNS code path.
    """
    import os

    import pyarrow.feather as feather

    os.makedirs(directory, exist_ok=True)
    annotations = os.path.join(directory, f"body-annotations-{release}.feather")
    weights = os.path.join(directory, f"connectome-weights-{release}.feather")
    renamed = {canonical: source for source, canonical in ANNOTATION_COLUMNS.items()}
    columns = {"bodyId": neurons["neuron_id"].cast(pa.int64())}
    columns.update({renamed[c]: neurons[c] for c in renamed if c in neurons.column_names})
    feather.write_feather(pa.table(columns), annotations, compression="lz4")
    schema = pa.schema([("body_pre", pa.int64()), ("body_post", pa.int64()), ("weight", pa.int32()), ("synapse_class", pa.string())])
    with pa.OSFile(weights, "wb") as sink, pa.ipc.new_file(sink, schema, options=pa.ipc.IpcWriteOptions(compression="lz4")) as writer:
        for batch in connections:
            writer.write_batch(
                pa.record_batch(
                    [batch["pre_neuron_id"].cast(pa.int64()), batch["post_neuron_id"].cast(pa.int64()), batch["weight"].cast(pa.int32()), batch["synapse_class"]],
                    schema=schema,
                )
            )
    return {"annotations": annotations, "weights": weights}
