"""Parquet exports to the object store (file:// and gs:// on fake-gcs-server) and their row-count check."""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from connectome_assets.metadata.store import MetadataStore
from connectome_assets.progress import Progress
from connectome_assets.warehouse import exports
from connectome_assets.graph.bottleneck import BottleneckParams, precompute_bottleneck_neurons
from connectome_assets.graph.status import graph_source_version
from connectome_assets.warehouse.exports import ExportError, export_dataset, export_root, verify_export
from connectome_assets.warehouse.upload import dataset_row_count, upload_table_atomically
from connectome_assets_tests.deployed import connections, insert_bottlenecks, record_bottleneck_status, upload_source

EXPECTED_TABLES = ["neurons", "synapses", "precomputed_analysis_status", "precomputed_bottleneck_neurons"]


def deploy_two(clickhouse, database: str, store: MetadataStore) -> tuple[uuid.UUID, uuid.UUID]:
    a = upload_source(clickhouse, database, store, "alpha", [1, 2, 3, 4], [(1, 2, 3), (2, 3, 1), (3, 4, 2)])
    b = upload_source(clickhouse, database, store, "beta", [1, 2, 9], [(1, 9, 5), (9, 2, 1)])
    insert_bottlenecks(clickhouse, database, a, [2, 3])
    insert_bottlenecks(clickhouse, database, b, [9])
    record_bottleneck_status(clickhouse, database, store, a, "ok", 2)
    record_bottleneck_status(clickhouse, database, store, b, "ok", 1)
    return a, b


def test_file_export_holds_exactly_the_datasets_rows_and_verifies(clickhouse, database: str, metadata_store: MetadataStore, tmp_path: Path) -> None:
    a, b = deploy_two(clickhouse, database, metadata_store)
    store_uri = f"file://{tmp_path / 'objects'}"
    lines: list[str] = []
    result = export_dataset(clickhouse, database, metadata_store, store_uri, "alpha", lines.append)
    # Row groups and files advance one progress; its total is the ClickHouse counts, so it ends at 100%.
    assert re.fullmatch(r"alpha exports: done, 4/4 tables, 10 rows in \d+ s, \S+ rows/s", lines[-1]), lines
    assert (result.progress["rows"], result.progress["tables"]) == (10, 4)

    root = tmp_path / "objects" / "exports" / "alpha" / result.version
    assert result.root == export_root(store_uri, "alpha", result.version) == f"file://{root}"
    assert [t.table for t in result.tables] == sorted(EXPECTED_TABLES, key=EXPECTED_TABLES.index)
    assert sorted(p.name for p in root.iterdir()) == sorted([f"{t}.parquet" for t in EXPECTED_TABLES] + ["manifest.json"])  # no temporaries
    manifest = json.loads((root / "manifest.json").read_text())
    assert manifest["version"] == result.version and manifest["dataset_id"] == str(a)
    assert {t: m["rows"] for t, m in manifest["tables"].items()} == {
        "neurons": 4,
        "synapses": 3,
        "precomputed_analysis_status": 1,
        "precomputed_bottleneck_neurons": 2,
    }
    assert manifest["products"]["precomputed_bottleneck_neurons"] == {"status": "ok", "source_data_version": result.version}

    for table in EXPECTED_TABLES:
        exported = pq.read_table(root / f"{table}.parquet")
        assert exported.num_rows == dataset_row_count(clickhouse, database, table, a)
        assert set(exported.column("dataset_id").to_pylist()) == {a}  # never the other dataset's rows
    expected = clickhouse.query_arrow(
        f"SELECT * FROM {database}.synapses WHERE dataset_id = {{ds:UUID}} ORDER BY pre_neuron_id", parameters={"ds": str(a)}
    )
    assert pq.read_table(root / "synapses.parquet").to_pylist() == expected.to_pylist()
    bottlenecks = pq.read_table(root / "precomputed_bottleneck_neurons.parquet").to_pylist()
    assert [(r["neuron_id"], r["rank"], r["betweenness"]) for r in bottlenecks] == [(2, 1, 0.5), (3, 2, None)]

    check = verify_export(clickhouse, database, metadata_store, store_uri, "alpha")
    assert check.ok, check.problems
    assert {c.table: (c.parquet_rows, c.clickhouse_rows) for c in check.counts}["synapses"] == (3, 3)

    # The same rows exported again give the same objects, byte for byte.
    before = {p.name: p.read_bytes() for p in root.glob("*.parquet")}
    assert export_dataset(clickhouse, database, metadata_store, store_uri, "alpha").root == result.root
    assert {p.name: p.read_bytes() for p in root.glob("*.parquet")} == before

    # The second dataset's export holds only its own rows.
    other = export_dataset(clickhouse, database, metadata_store, store_uri, "beta")
    other_root = tmp_path / "objects" / "exports" / "beta" / other.version
    assert pq.read_table(other_root / "neurons.parquet").column("neuron_id").to_pylist() == [1, 2, 9]
    assert set(pq.read_table(other_root / "synapses.parquet").column("dataset_id").to_pylist()) == {b}


def test_check_fails_when_clickhouse_rows_change_or_a_file_is_gone(clickhouse, database: str, metadata_store: MetadataStore, tmp_path: Path) -> None:
    a, _ = deploy_two(clickhouse, database, metadata_store)
    store_uri = f"file://{tmp_path / 'objects'}"
    result = export_dataset(clickhouse, database, metadata_store, store_uri, "alpha")
    clickhouse.command(
        f"ALTER TABLE {database}.synapses DELETE WHERE dataset_id = {{ds:UUID}} AND pre_neuron_id = 1 SETTINGS mutations_sync = 2",
        parameters={"ds": str(a)},
    )
    check = verify_export(clickhouse, database, metadata_store, store_uri, "alpha")
    assert not check.ok
    assert check.problems == ["`synapses` export has 3 rows (manifest 3), ClickHouse has 2"]

    (tmp_path / "objects" / "exports" / "alpha" / result.version / "neurons.parquet").unlink()
    assert any(p.startswith("`neurons` has no export file") for p in verify_export(clickhouse, database, metadata_store, store_uri, "alpha").problems)


def test_a_reimport_gets_a_new_version_path(clickhouse, database: str, metadata_store: MetadataStore, tmp_path: Path) -> None:
    a, _ = deploy_two(clickhouse, database, metadata_store)
    store_uri = f"file://{tmp_path / 'objects'}"
    first = export_dataset(clickhouse, database, metadata_store, store_uri, "alpha")
    upload_table_atomically(clickhouse, database, "synapses", a, [connections([(1, 2, 3)])], metadata_store)
    check = verify_export(clickhouse, database, metadata_store, store_uri, "alpha")
    assert not check.ok and "has no export of source version" in check.problems[0] and "feature_exports" in check.problems[0]
    # The product was computed from the previous rows: it is not exported under the new version.
    with pytest.raises(ExportError, match="stale.*re-materialize `bottleneck_neurons`"):
        export_dataset(clickhouse, database, metadata_store, store_uri, "alpha")
    assert not Path(export_root(store_uri, "alpha", graph_source_version(metadata_store, a))[len("file://") :]).exists()
    record_bottleneck_status(clickhouse, database, metadata_store, a, "ok", 2)  # recomputed from the new rows
    second = export_dataset(clickhouse, database, metadata_store, store_uri, "alpha")
    assert second.version != first.version and second.root != first.root
    assert {t.table: t.rows for t in second.tables}["synapses"] == 1
    manifest = json.loads(Path(second.manifest_uri[len("file://") :]).read_text())
    assert manifest["products"]["precomputed_bottleneck_neurons"]["source_data_version"] == second.version
    assert verify_export(clickhouse, database, metadata_store, store_uri, "alpha").ok


@pytest.mark.parametrize("metadata_url", ["sqlite"], indirect=True)
def test_gcs_export_matches_clickhouse(clickhouse, database: str, metadata_store: MetadataStore, gcs_bucket, tmp_path: Path) -> None:
    a, _ = deploy_two(clickhouse, database, metadata_store)
    store_uri = f"gs://{gcs_bucket.name}/warehouse"
    result = export_dataset(clickhouse, database, metadata_store, store_uri, "alpha")
    assert result.root == f"gs://{gcs_bucket.name}/warehouse/exports/alpha/{result.version}"
    names = sorted(blob.name for blob in gcs_bucket.list_blobs(prefix="warehouse/"))
    prefix = f"warehouse/exports/alpha/{result.version}/"
    assert names == sorted([prefix + f"{t}.parquet" for t in EXPECTED_TABLES] + [prefix + "manifest.json"])  # no temporaries
    manifest = json.loads(gcs_bucket.blob(prefix + "manifest.json").download_as_bytes())
    assert manifest["tables"]["neurons"]["rows"] == 4

    local = tmp_path / "neurons.parquet"
    gcs_bucket.blob(prefix + "neurons.parquet").download_to_filename(str(local))
    expected = clickhouse.query_arrow(
        f"SELECT * FROM {database}.neurons WHERE dataset_id = {{ds:UUID}} ORDER BY neuron_id", parameters={"ds": str(a)}
    )
    assert pq.read_table(local).to_pylist() == expected.to_pylist()

    assert verify_export(clickhouse, database, metadata_store, store_uri, "alpha").ok
    clickhouse.command(
        f"ALTER TABLE {database}.neurons DELETE WHERE dataset_id = {{ds:UUID}} AND neuron_id = 4 SETTINGS mutations_sync = 2",
        parameters={"ds": str(a)},
    )
    assert verify_export(clickhouse, database, metadata_store, store_uri, "alpha").problems == [
        "`neurons` export has 4 rows (manifest 4), ClickHouse has 3"
    ]


@pytest.mark.parametrize("metadata_url", ["sqlite"], indirect=True)
def test_large_table_streams_in_row_groups(
    clickhouse, database: str, metadata_store: MetadataStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = list(range(1, 1001))
    edges = [(ids[i % 1000], ids[(i * 7 + 1) % 1000], 1 + i // 1000) for i in range(300_000)]
    dataset = upload_source(clickhouse, database, metadata_store, "big", ids, edges)
    precompute_bottleneck_neurons(clickhouse, database, metadata_store, dataset, BottleneckParams())
    monkeypatch.setattr(exports, "ROW_GROUP_ROWS", 1 << 16)
    result = export_dataset(clickhouse, database, metadata_store, f"file://{tmp_path}", "big")
    metadata = pq.ParquetFile(Path(result.root[len("file://") :]) / "synapses.parquet").metadata
    assert metadata.num_rows == 300_000
    assert metadata.num_row_groups >= 4 and all(metadata.row_group(i).num_rows <= 1 << 16 for i in range(metadata.num_row_groups))
    first = pq.read_table(Path(result.root[len("file://") :]) / "synapses.parquet", columns=["pre_neuron_id", "post_neuron_id"])
    pairs = list(zip(first.column(0).to_pylist(), first.column(1).to_pylist()))
    assert pairs == sorted(pairs)  # the table's sorting-key order, so a re-export writes the same bytes


def test_write_parquet_advances_the_progress_per_row_group_and_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(exports, "ROW_GROUP_ROWS", 4)
    table = pa.table({"x": pa.array(range(10), pa.int64())})
    lines: list[str] = []
    ticks = iter(range(100))
    progress = Progress("t exports", lines.append, total=20, step="tables", steps_total=2, every_seconds=0, clock=lambda: next(ticks))
    rows, _ = exports.write_parquet(pafs.LocalFileSystem(), str(tmp_path / "t.parquet"), table.schema, table.to_batches(max_chunksize=3), progress)
    assert rows == 10
    assert lines == [
        "t exports: 0/2 tables, 6 of 20 rows (30%), 6 rows/s, ETA 2 s",  # the batches of 3 rows regrouped by 4 or more
        "t exports: 0/2 tables, 10 of 20 rows (50%), 5 rows/s, ETA 2 s",
        "t exports: 1/2 tables, 10 of 20 rows (50%), 3.33 rows/s, ETA 3 s",
    ]


def test_a_table_export_that_fails_transiently_is_retried_whole_and_counted_once(
    clickhouse, database: str, metadata_store: MetadataStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from google.api_core.exceptions import ServiceUnavailable

    deploy_two(clickhouse, database, metadata_store)
    real_write, failed = exports.write_parquet, []

    def write_failing_once(fs, path, schema, batches, progress=None):
        """Fault injection (no real GCS can fail here on demand): the first synapses file breaks
        after its rows were streamed and counted, as a 503 from the object store would."""
        if path.endswith("/synapses.parquet") and not failed:
            failed.append(path)
            for batch in batches:
                progress.advance(batch.num_rows, steps=0)
            raise ServiceUnavailable("the object store is busy")
        return real_write(fs, path, schema, batches, progress)

    monkeypatch.setattr(exports, "write_parquet", write_failing_once)
    lines: list[str] = []
    store_uri = f"file://{tmp_path / 'objects'}"
    result = export_dataset(clickhouse, database, metadata_store, store_uri, "alpha", lines.append)
    assert failed and any(line.startswith("export of alpha.synapses: attempt 1 of 5 failed with a transient error (ServiceUnavailable") for line in lines)
    assert (result.progress["rows"], result.progress["tables"]) == (10, 4)  # the retried table's rows once
    assert {t.table: t.rows for t in result.tables}["synapses"] == 3
    assert verify_export(clickhouse, database, metadata_store, store_uri, "alpha").ok
