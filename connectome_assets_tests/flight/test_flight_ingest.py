"""Flight ingest against a real Flight server on 127.0.0.1 (in a thread of this process, so it
shares the one chDB of the test process), real chDB and the metadata store on SQLite and PostgreSQL."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.feather as feather
import pyarrow.flight as flight
import pytest

from connectome_assets.connectome.catalog import DatasetEntry, sources_version, write_entry
from connectome_assets.connectome.errors import SourceError
from connectome_assets.connectome.ingest import import_neurons, import_synapses
from connectome_assets.flight.client import call_options, flight_batches, upload_to_flight
from connectome_assets.flight.protocol import end_of_table
from connectome_assets.registry.config import registry_config
from connectome_assets.registry.service import Registry
from connectome_assets.settings import Settings
from connectome_assets.warehouse.client import connect
from connectome_assets_tests.conftest import _free_port
from connectome_assets_tests.flight.helpers import TOKEN, ClientFailed, FlightEnv, failing_after, neurons, random_edges, wait_until_uploading
from connectome_assets_tests.releases import entry, write_release

def test_flight_batches_are_at_most_65536_rows_and_keep_every_row() -> None:
    small = [pa.record_batch({"x": np.arange(n)}) for n in (10, 70_000, 3, 65_536, 1)]
    out = list(flight_batches(small))
    assert [b.num_rows for b in out] == [65_536, 65_536, 4_478]
    assert pa.Table.from_batches(out).column("x").to_pylist() == pa.Table.from_batches(small).column("x").to_pylist()


def test_multi_batch_upload_arrives_whole(env: FlightEnv) -> None:
    rng = np.random.default_rng(7)
    ids = np.arange(1, 401, dtype=np.uint64) * 1000
    edges = random_edges(rng, ids, 20_000)
    env.add_dataset("fl")
    assert env.upload("fl", "neurons", neurons(ids), batch_rows=128).rows_accepted == 400
    sent = env.upload("fl", "synapses", edges, batch_rows=1_000)
    assert (sent.rows_sent, sent.batches_sent, sent.rows_accepted, sent.rows_dropped) == (20_000, 20, 20_000, 0)
    state = env.upload_state("fl", "synapses")
    assert (state.upload_state, state.row_count) == ("uploaded", 20_000)
    expected = sorted(zip(edges["pre_neuron_id"].to_pylist(), edges["post_neuron_id"].to_pylist(), edges["weight"].to_pylist()))
    assert env.rows("fl", "synapses", "pre_neuron_id, post_neuron_id, weight") == expected
    assert env.rows("fl", "neurons", "neuron_id, type, attributes['hemilineage']")[:2] == [(1000, "T0", "07B"), (2000, "T1", "07B")]


def test_filter_drops_exactly_what_the_direct_path_drops(env: FlightEnv, tmp_path: Path) -> None:
    rng = np.random.default_rng(11)
    bodies = [int(b) for b in rng.choice(np.arange(10, 10_000), 300, replace=False)]
    universe = np.arange(10, 12_000)  # endpoints outside the annotated bodies too
    edges = [(int(a), int(b), int(w)) for a, b, w in zip(rng.choice(universe, 5_000), rng.choice(universe, 5_000), rng.integers(1, 9, 5_000))]
    sources = write_release(tmp_path / "release", bodies, edges)
    direct = entry("direct", sources)
    write_entry(env.settings.catalog, dataclasses.replace(direct, location=str(env.settings.catalog / "direct.yaml")))
    db = env.settings.clickhouse_database
    import_neurons(direct, connect(env.settings.clickhouse_url), db, env.state)
    direct_import = import_synapses(direct, connect(env.settings.clickhouse_url), db, env.state)

    annotations = feather.read_table(sources["annotations"]).rename_columns({"bodyId": "neuron_id"})
    weights = feather.read_table(sources["weights"]).rename_columns(["pre_neuron_id", "post_neuron_id", "weight"])
    env.add_dataset("viaflight")
    env.upload("viaflight", "neurons", annotations)
    sent = env.upload("viaflight", "synapses", weights, batch_rows=700)

    stats = direct_import.filter
    assert stats.rows_dropped > 0 and stats.rows_kept > 0
    assert (sent.rows_accepted, sent.rows_dropped) == (stats.rows_kept, stats.rows_dropped)
    reasons = ("dropped_pre_missing", "dropped_post_missing", "dropped_both_missing")
    assert [sent.answer[r] for r in reasons] == [getattr(stats, r) for r in reasons]
    columns = "pre_neuron_id, post_neuron_id, weight"
    assert env.rows("viaflight", "synapses", columns) == env.rows("direct", "synapses", columns)
    assert env.rows("viaflight", "neurons", "neuron_id, type, instance, status") == env.rows("direct", "neurons", "neuron_id, type, instance, status")


def test_broken_stream_leaves_nothing_and_failed(env: FlightEnv) -> None:
    ids = np.arange(1, 301, dtype=np.uint64)
    env.add_dataset("fl")
    env.upload("fl", "neurons", neurons(ids[:100]))
    with pytest.raises(ClientFailed):
        env.upload("fl", "neurons", failing_after(neurons(ids), 2, 50), schema=neurons(ids).schema, batch_rows=100)
    state = env.settled_state("fl", "neurons")
    assert (state.upload_state, state.row_count) == ("failed", 100)
    assert "without the client's end-of-table marker" in state.error_message
    assert len(env.rows("fl", "neurons", "neuron_id")) == 100  # the previous good rows

    env.upload("fl", "neurons", neurons(ids[:100]))  # synapses need uploaded neurons, not failed ones
    edges = random_edges(np.random.default_rng(3), ids[:100], 10_000)
    with pytest.raises(ClientFailed):
        env.upload("fl", "synapses", failing_after(edges, 5, 1_000), schema=edges.schema, batch_rows=500)
    state = env.settled_state("fl", "synapses")
    assert state.upload_state == "failed" and "after 5000 rows" in state.error_message
    assert env.rows("fl", "synapses", "pre_neuron_id") == []


def open_put(client: flight.FlightClient, dataset: str, table: str, schema: pa.Schema):
    return client.do_put(flight.FlightDescriptor.for_path(dataset, table), schema, options=call_options(TOKEN, 60))


def test_concurrent_uploads_of_different_tables_of_different_datasets_both_land(env: FlightEnv) -> None:
    """Both streams are held open, each with its table claimed, before either ends."""
    rng = np.random.default_rng(5)
    ids = np.arange(1, 2_001, dtype=np.uint64)
    for name in ("a", "b"):
        env.add_dataset(name)
    env.upload("b", "neurons", neurons(ids))
    cells, edges = neurons(ids[:1_500]), random_edges(rng, ids, 60_000)
    with flight.connect(env.url) as client:
        (a_writer, a_answers), (b_writer, b_answers) = open_put(client, "a", "neurons", cells.schema), open_put(client, "b", "synapses", edges.schema)
        a_writer.write_table(cells.slice(0, 700))
        b_writer.write_table(edges.slice(0, 30_000))
        wait_until_uploading(env, "a", "neurons")
        wait_until_uploading(env, "b", "synapses")
        a_writer.write_table(cells.slice(700))
        b_writer.write_table(edges.slice(30_000))
        for writer, answers, rows in ((a_writer, a_answers, 1_500), (b_writer, b_answers, 60_000)):
            writer.write_metadata(end_of_table(rows))
            writer.done_writing()
            assert json.loads(answers.read().to_pybytes())["rows_accepted"] == rows
            writer.close()
    assert (env.upload_state("a", "neurons").row_count, env.upload_state("b", "synapses").row_count) == (1_500, 60_000)
    assert len(env.rows("b", "synapses", "pre_neuron_id, post_neuron_id, weight")) == 60_000
    assert len(env.rows("a", "neurons", "neuron_id")) == 1_500


def test_second_doput_of_a_table_mid_upload_is_refused(env: FlightEnv) -> None:
    table = neurons(np.arange(1, 51, dtype=np.uint64))
    env.add_dataset("fl")
    with flight.connect(env.url) as client:
        writer, answers = open_put(client, "fl", "neurons", table.schema)
        writer.write_table(table)
        wait_until_uploading(env, "fl", "neurons")
        with pytest.raises(flight.FlightUnavailableError, match=r"Flight upload of fl/neurons refused: .*is being uploaded by"):
            env.upload("fl", "neurons", table)
        writer.write_metadata(end_of_table(50))
        writer.done_writing()
        assert answers.read() is not None
        writer.close()
    state = env.upload_state("fl", "neurons")
    assert (state.upload_state, state.row_count) == ("uploaded", 50)


def test_upload_needs_a_token_with_write_on_the_dataset(env: FlightEnv) -> None:
    table = neurons([1, 2, 3])
    env.add_dataset("fl")
    with pytest.raises(flight.FlightUnauthenticatedError, match="missing bearer token"):
        upload_to_flight(env.url, "fl", "neurons", table, "", timeout_seconds=60)
    with pytest.raises(flight.FlightUnauthenticatedError, match="unknown token"):
        env.upload("fl", "neurons", table, token="not-a-token")
    registry = Registry(env.state, registry_config(env.settings))
    reader = registry.create_token("reader", grants=[("fl", "read")])
    with pytest.raises(flight.FlightUnauthorizedError, match="user reader needs write on datastack fl"):
        env.upload("fl", "neurons", table, token=reader)
    assert env.state.dataset_names() == []  # nothing was claimed or written
    writer = registry.create_token("writer", grants=[("fl", "write")])
    assert env.upload("fl", "neurons", table, token=writer).rows_accepted == 3


def test_unknown_dataset_table_or_bad_schema_is_one_sentence(env: FlightEnv, tmp_path: Path) -> None:
    env.add_dataset("fl")
    with pytest.raises(pa.ArrowInvalid, match="unknown dataset 'nope': no catalog entry"):
        env.upload("nope", "neurons", neurons([1]))
    with pytest.raises(pa.ArrowInvalid, match="unknown table 'cells'"):
        env.upload("fl", "cells", neurons([1]))
    with pytest.raises(pa.ArrowInvalid, match=r"Flight upload of fl/neurons: missing required column 'neuron_id'"):
        env.upload("fl", "neurons", pa.table({"bodyId": [1]}))
    with pytest.raises(pa.ArrowInvalid, match=r"Flight upload of fl/synapses: column 'weight' has type string; weights must be numeric"):
        env.upload("fl", "synapses", pa.table({"pre_neuron_id": [1], "post_neuron_id": [1], "weight": ["x"]}))
    write_entry(env.settings.catalog, dataclasses.replace(entry("files", write_release(tmp_path / "r", [1], [])), location="x"))
    with pytest.raises(pa.ArrowInvalid, match="has source model 'flyem_feather': its rows come from its source files"):
        env.upload("files", "neurons", neurons([1]))


def test_a_flight_datasets_sources_version_changes_exactly_when_a_table_completes_an_upload(env: FlightEnv) -> None:
    env.add_dataset("fl")
    ids = np.arange(1, 101, dtype=np.uint64)
    before = sources_version(env.settings.catalog, "fl", env.state)
    assert before.startswith("received-")
    assert sources_version(env.settings.catalog, "fl", env.state) == before
    env.upload("fl", "neurons", neurons(ids))
    with_neurons = sources_version(env.settings.catalog, "fl", env.state)
    assert with_neurons != before
    with pytest.raises(ClientFailed):
        env.upload("fl", "neurons", failing_after(neurons(ids), 1, 50), schema=neurons(ids).schema, batch_rows=50)
    assert env.settled_state("fl", "neurons").upload_state == "failed"
    assert sources_version(env.settings.catalog, "fl", env.state) == with_neurons  # a failed upload changes nothing
    with pytest.raises(pa.ArrowInvalid, match="neurons are 'failed'; synapses are filtered against the uploaded neurons, so neurons come first"):
        env.upload("fl", "synapses", random_edges(np.random.default_rng(1), ids, 500))
    assert sources_version(env.settings.catalog, "fl", env.state) == with_neurons
    env.upload("fl", "neurons", neurons(ids))
    again = sources_version(env.settings.catalog, "fl", env.state)
    env.upload("fl", "synapses", random_edges(np.random.default_rng(1), ids, 500))
    assert len({before, with_neurons, again, sources_version(env.settings.catalog, "fl", env.state)}) == 4
    # The rows of a flight dataset are never read from files, whatever path asks.
    with pytest.raises(SourceError, match="arrive over Arrow Flight"):
        import_neurons(DatasetEntry("fl", "flight", location="catalog/fl.yaml"), connect(env.settings.clickhouse_url), env.settings.clickhouse_database, env.state)


def test_flight_dataset_through_dagster_and_the_cli(settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`dataset add --model flight` registers and observes it; materializing neurons before any
    upload records nothing; `connectome flight serve` / `upload` as subprocesses move a Feather file."""
    from connectome_assets.cli import main, materialize_dataset

    env = {**os.environ, "CONNECTOME_HOME": str(settings.home), "CONNECTOME_CATALOG": str(settings.catalog), "CONNECTOME_METADATA_URL": settings.metadata_url,
           "CONNECTOME_CLICKHOUSE_URL": f"chdb://{tmp_path / 'served'}", "CONNECTOME_FLIGHT_TOKEN": TOKEN, "DAGSTER_HOME": str(settings.dagster_home)}
    for key in ("CONNECTOME_HOME", "CONNECTOME_CATALOG", "CONNECTOME_METADATA_URL", "DAGSTER_HOME"):
        monkeypatch.setenv(key, env[key])
    assert main(["dataset", "add", "fl", "--model", "flight"]) == 0
    report = materialize_dataset(settings, "fl", "key:neurons")
    assert (report.success, report.materialized, report.failures) == (True, {}, [])

    port = _free_port()
    server = subprocess.Popen([sys.executable, "-m", "connectome_assets.cli", "flight", "serve", "--port", str(port)], env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert "Flight ingest listening on grpc://127.0.0.1:" in server.stdout.readline()
        feather.write_feather(neurons([5, 6, 7]), tmp_path / "neurons.feather")
        upload = [sys.executable, "-m", "connectome_assets.cli", "flight", "upload", "fl", "neurons", str(tmp_path / "neurons.feather"), "--url", f"grpc://127.0.0.1:{port}"]
        done = subprocess.run(upload, env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == "fl/neurons: sent 3 rows in 1 batches; server received 3, accepted 3, dropped 0"
        refused = subprocess.run([*upload, "--token", "wrong"], env=env, capture_output=True, text=True, timeout=120)
        assert refused.returncode == 1
        assert refused.stderr.strip() == f"connectome: Flight upload of fl/neurons to grpc://127.0.0.1:{port} failed: Flight call refused: unknown token"
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(timeout=30)
