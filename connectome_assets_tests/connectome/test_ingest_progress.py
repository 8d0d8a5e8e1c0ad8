"""Progress of an import: source rows counted as they are read, the total from Feather metadata."""

from __future__ import annotations

import re
from itertools import count
from pathlib import Path

import numpy as np
import pyarrow as pa

from connectome_assets.connectome.filtering import AnnotatedNeuronSet, EndpointFilterStats
from connectome_assets.connectome.ingest import annotated_connections, import_neurons, import_synapses
from connectome_assets.connectome.sources.cect import CectPackage
from connectome_assets.progress import Progress, si
from connectome_assets_tests.releases import entry, write_release

BODIES = [10, 20, 30, 40]
EDGES = [(10, 20, 3), (20, 30, 1), (30, 10, 2), (40, 40, 5), (10, 99, 7), (99, 20, 1), (77, 99, 4)]


def ticking_clock():
    """A clock one second later at every reading: rates and ETAs come out exact."""
    return count().__next__


def test_feather_row_count_comes_from_the_batch_metadata_of_every_stored_batch(tmp_path: Path) -> None:
    sources = write_release(tmp_path, BODIES, [])
    schema = pa.schema([("body_pre", pa.int64()), ("body_post", pa.int64()), ("weight", pa.int32())])
    with pa.OSFile(sources["weights"], "wb") as sink, pa.ipc.new_file(sink, schema) as writer:
        for rows in (3, 5, 2):
            writer.write_batch(pa.record_batch([pa.array([10] * rows), pa.array([20] * rows), pa.array([1] * rows, pa.int32())], schema=schema))
    assert entry("toy", sources).source_model().connection_rows() == 10
    csv = tmp_path / "connections.csv"
    csv.write_text("bodyId_pre,bodyId_post,weight\n10,20,1\n")
    neuprint = entry("toy", {"neurons": str(csv), "connections": str(csv)}, model="neuprint_csv")
    assert neuprint.source_model().connection_rows() is None  # only reading a CSV would tell


def test_progress_counts_source_rows_before_the_filter_with_the_feather_total(tmp_path: Path) -> None:
    model = entry("toy", write_release(tmp_path, BODIES, EDGES)).source_model()
    lines: list[str] = []
    progress = Progress("toy synapses", lines.append, total=model.connection_rows(), every_seconds=0, clock=ticking_clock())
    stats = EndpointFilterStats()
    kept = sum(b.num_rows for b in annotated_connections(model, AnnotatedNeuronSet(np.array(BODIES, np.uint64)), stats, progress))
    assert (kept, stats.rows_read) == (4, 7)
    assert lines == ["toy synapses: 1 batches, 7 of 7 rows (100%), 7 rows/s, ETA 0 s"]


def test_progress_advances_once_per_source_batch() -> None:
    """cect yields one batch per connection kind; the filter then drops muscles and glia."""
    model = CectPackage({}, {"reader": "WitvlietDataReader8"}, "test:witvliet")
    annotated = AnnotatedNeuronSet(model.read_neurons().column("neuron_id"))
    lines: list[str] = []
    progress = Progress("w8 synapses", lines.append, every_seconds=0, clock=ticking_clock())
    stats = EndpointFilterStats()
    kept = sum(b.num_rows for b in annotated_connections(model, annotated, stats, progress))
    assert len(lines) == progress.steps >= 2
    assert [line.split(",")[0] for line in lines] == [f"w8 synapses: {i} batches" for i in range(1, len(lines) + 1)]
    assert lines[-1] == f"w8 synapses: {len(lines)} batches, {si(progress.amount)} rows, {si(progress.amount / len(lines))} rows/s"  # no total, no ETA
    assert progress.amount == stats.rows_read > kept


def test_import_reports_a_done_line_and_its_figures(tmp_path: Path, clickhouse, database: str, metadata_store) -> None:
    dataset = entry("toy", write_release(tmp_path, BODIES, EDGES))
    lines: list[str] = []
    neurons = import_neurons(dataset, clickhouse, database, metadata_store, lines.append)
    synapses = import_synapses(dataset, clickhouse, database, metadata_store, lines.append)
    assert len(lines) == 2
    assert re.fullmatch(r"toy neurons: done, 1 batches, 4 rows in \d+ s, \S+ rows/s", lines[0]), lines
    assert re.fullmatch(r"toy synapses: done, 1 batches, 7 rows in \d+ s, \S+ rows/s", lines[1]), lines
    assert (neurons.progress["rows"], neurons.progress["batches"]) == (4, 1)
    assert (synapses.progress["rows"], synapses.progress["batches"], synapses.rows_written) == (7, 1, 4)
    assert synapses.progress["seconds"] > 0 and synapses.progress["rows_per_second"] > 0
