"""The article cache: exactly the deployed product rows, loud failures, all-or-nothing swaps; and its CLI."""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from connectome_assets.cli import main
from connectome_assets.graph.status import SourceNotUploadedError
from connectome_assets.metadata.store import MetadataStore, UnknownDatasetError
from connectome_assets.warehouse import article_cache
from connectome_assets.warehouse.article_cache import ArticleCacheError, populate_article_cache
from connectome_assets.warehouse.upload import upload_table_atomically
from connectome_assets_tests.deployed import connections, insert_bottlenecks, record_bottleneck_status, upload_source

PRODUCT = "precomputed_bottleneck_neurons"


def deploy(clickhouse, database: str, store: MetadataStore, name: str = "alpha", bottlenecks: tuple[int, ...] = (2, 3)) -> uuid.UUID:
    dataset_id = upload_source(clickhouse, database, store, name, [1, 2, 3, 4], [(1, 2, 3), (2, 3, 1), (3, 4, 2)])
    if bottlenecks:
        insert_bottlenecks(clickhouse, database, dataset_id, list(bottlenecks))
    return dataset_id


def clickhouse_rows(clickhouse, database: str, table: str, dataset_id: uuid.UUID, order: str, final: bool = False) -> list[dict]:
    query = f"SELECT * FROM {database}.{table}{' FINAL' if final else ''} WHERE dataset_id = {{ds:UUID}} ORDER BY {order}"
    return clickhouse.query_arrow(query, parameters={"ds": str(dataset_id)}).to_pylist()


def snapshot(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


def test_cache_holds_exactly_the_deployed_rows(clickhouse, database: str, metadata_store: MetadataStore, tmp_path: Path) -> None:
    a = deploy(clickhouse, database, metadata_store)
    b = deploy(clickhouse, database, metadata_store, "beta", (1, 4, 3))
    record_bottleneck_status(clickhouse, database, metadata_store, a, "failed", 0, version="older")  # superseded below
    record_bottleneck_status(clickhouse, database, metadata_store, a, "ok", 2)
    record_bottleneck_status(clickhouse, database, metadata_store, b, "ok", 3)

    result = populate_article_cache(clickhouse, database, metadata_store, "alpha", tmp_path / "cache")
    directory = tmp_path / "cache" / "alpha"
    assert result.directory == directory
    assert [(t.table, t.rows, t.status) for t in result.tables] == [(PRODUCT, 2, "ok")]
    assert sorted(p.name for p in directory.iterdir()) == ["manifest.json", "precomputed_analysis_status.parquet", f"{PRODUCT}.parquet"]
    assert [p.name for p in (tmp_path / "cache").iterdir()] == ["alpha"]  # no staging left behind

    # Row for row the ClickHouse rows of this dataset: nothing added, nothing from beta.
    assert pq.read_table(directory / f"{PRODUCT}.parquet").to_pylist() == clickhouse_rows(clickhouse, database, PRODUCT, a, "rank")
    statuses = pq.read_table(directory / "precomputed_analysis_status.parquet").to_pylist()
    assert statuses == clickhouse_rows(clickhouse, database, "precomputed_analysis_status", a, "product", final=True)
    assert [(s["status"], s["row_count"]) for s in statuses] == [("ok", 2)]
    manifest = json.loads((directory / "manifest.json").read_text())
    assert manifest["version"] == result.version and manifest["tables"][PRODUCT]["rows"] == 2


def test_empty_product_with_status_ok_fails_naming_table_and_asset(clickhouse, database: str, metadata_store: MetadataStore, tmp_path: Path) -> None:
    a = deploy(clickhouse, database, metadata_store, bottlenecks=())
    record_bottleneck_status(clickhouse, database, metadata_store, a, "ok", 0)
    with pytest.raises(ArticleCacheError) as raised:
        populate_article_cache(clickhouse, database, metadata_store, "alpha", tmp_path / "cache")
    message = str(raised.value)
    assert message == f"`{PRODUCT}` is empty for dataset alpha although its analysis status is 'ok'; re-materialize `bottleneck_neurons`"
    assert not (tmp_path / "cache").exists()  # judged before anything is written


@pytest.mark.parametrize("status", ["empty_graph", "not_applicable"])
def test_expected_empty_product_is_cached_empty(clickhouse, database: str, metadata_store: MetadataStore, tmp_path: Path, status: str) -> None:
    a = deploy(clickhouse, database, metadata_store, bottlenecks=())
    record_bottleneck_status(clickhouse, database, metadata_store, a, status, 0)
    result = populate_article_cache(clickhouse, database, metadata_store, "alpha", tmp_path / "cache")
    assert [(t.table, t.rows, t.status) for t in result.tables] == [(PRODUCT, 0, status)]
    cached = pq.read_table(tmp_path / "cache" / "alpha" / f"{PRODUCT}.parquet")
    assert cached.num_rows == 0 and "betweenness" in cached.schema.names  # empty, with the product's columns


def test_missing_failed_stale_or_miscounted_status_fails(clickhouse, database: str, metadata_store: MetadataStore, tmp_path: Path) -> None:
    a = deploy(clickhouse, database, metadata_store)
    out = tmp_path / "cache"

    def problem() -> str:
        with pytest.raises(ArticleCacheError) as raised:
            populate_article_cache(clickhouse, database, metadata_store, "alpha", out)
        return str(raised.value)

    assert problem() == f"`{PRODUCT}` has 2 rows for dataset alpha but has no analysis status; re-materialize `bottleneck_neurons`"
    record_bottleneck_status(clickhouse, database, metadata_store, a, "ok", 2, version="0123456789abcdef")
    assert "(stale); re-materialize `bottleneck_neurons`" in problem() and "0123456789abcdef" in problem()
    record_bottleneck_status(clickhouse, database, metadata_store, a, "failed", 0)
    assert problem().startswith(f"`{PRODUCT}` failed for dataset alpha")
    record_bottleneck_status(clickhouse, database, metadata_store, a, "ok", 5)
    assert problem() == f"`{PRODUCT}` has 2 rows for dataset alpha but its analysis status recorded 5; re-materialize `bottleneck_neurons`"
    record_bottleneck_status(clickhouse, database, metadata_store, a, "ok", 2)
    populate_article_cache(clickhouse, database, metadata_store, "alpha", out)

    # A re-import makes the product stale until it is recomputed.
    upload_table_atomically(clickhouse, database, "synapses", a, [connections([(1, 2, 3)])], metadata_store)
    assert "(stale)" in problem()
    assert (out / "alpha" / f"{PRODUCT}.parquet").exists()  # the previous cache is kept


def test_a_failure_leaves_the_previous_cache_untouched(
    clickhouse, database: str, metadata_store: MetadataStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    a = deploy(clickhouse, database, metadata_store)
    record_bottleneck_status(clickhouse, database, metadata_store, a, "ok", 2)
    out = tmp_path / "cache"
    populate_article_cache(clickhouse, database, metadata_store, "alpha", out)
    before = snapshot(out / "alpha")

    # 1. The product is judged bad: nothing is downloaded.
    clickhouse.command(
        f"ALTER TABLE {database}.{PRODUCT} DELETE WHERE dataset_id = {{ds:UUID}} SETTINGS mutations_sync = 2", parameters={"ds": str(a)}
    )
    with pytest.raises(ArticleCacheError, match="is empty"):
        populate_article_cache(clickhouse, database, metadata_store, "alpha", out)
    assert snapshot(out / "alpha") == before

    # 2. The download breaks half-way (after the product, before the status rows).
    insert_bottlenecks(clickhouse, database, a, [4, 1])
    real = article_cache.write_parquet

    def breaks_on_status(fs, path, schema, batches, progress=None):
        if path.endswith("precomputed_analysis_status.parquet"):
            raise OSError("disk full")
        return real(fs, path, schema, batches, progress)

    monkeypatch.setattr(article_cache, "write_parquet", breaks_on_status)
    with pytest.raises(OSError, match="disk full"):
        populate_article_cache(clickhouse, database, metadata_store, "alpha", out)
    assert snapshot(out / "alpha") == before
    assert [p.name for p in out.iterdir()] == ["alpha"]  # the staging folder is gone

    monkeypatch.setattr(article_cache, "write_parquet", real)
    populate_article_cache(clickhouse, database, metadata_store, "alpha", out)
    assert [r["neuron_id"] for r in pq.read_table(out / "alpha" / f"{PRODUCT}.parquet").to_pylist()] == [4, 1]


def test_missing_product_table_and_unknown_products(clickhouse, database: str, metadata_store: MetadataStore, tmp_path: Path) -> None:
    a = deploy(clickhouse, database, metadata_store)
    record_bottleneck_status(clickhouse, database, metadata_store, a, "ok", 2)
    # A discovered product outside PRODUCTS is cached too; empty, it is a missing product.
    clickhouse.command(f"CREATE TABLE {database}.precomputed_extra (dataset_id UUID, x UInt32) ENGINE = MergeTree PARTITION BY dataset_id ORDER BY x")
    with pytest.raises(ArticleCacheError) as raised:
        populate_article_cache(clickhouse, database, metadata_store, "alpha", tmp_path / "cache")
    assert str(raised.value) == "`precomputed_extra` is empty for dataset alpha; regenerate `precomputed_extra`"
    clickhouse.insert(f"{database}.precomputed_extra", [[a, 7], [a, 8]], column_names=["dataset_id", "x"])
    result = populate_article_cache(clickhouse, database, metadata_store, "alpha", tmp_path / "cache")
    assert {t.table: t.rows for t in result.tables} == {PRODUCT: 2, "precomputed_extra": 2}

    clickhouse.command(f"DROP TABLE {database}.{PRODUCT}")
    with pytest.raises(
        ArticleCacheError,
        match=f"`{PRODUCT}` does not exist as a dataset table in ClickHouse database {database}; re-materialize `bottleneck_neurons`",
    ):
        populate_article_cache(clickhouse, database, metadata_store, "alpha", tmp_path / "cache")


def test_unknown_or_unuploaded_dataset(clickhouse, database: str, metadata_store: MetadataStore, tmp_path: Path) -> None:
    with pytest.raises(UnknownDatasetError):
        populate_article_cache(clickhouse, database, metadata_store, "nope", tmp_path / "cache")
    metadata_store.ensure_dataset("bare", "flyem_feather")
    with pytest.raises(SourceNotUploadedError):
        populate_article_cache(clickhouse, database, metadata_store, "bare", tmp_path / "cache")


@pytest.mark.parametrize("metadata_url", ["sqlite"], indirect=True)
def test_cli_cache_populate(
    clickhouse, database: str, chdb_url: str, metadata_url: str, metadata_store: MetadataStore, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    for key, value in {
        "CONNECTOME_HOME": str(tmp_path / "home"),
        "CONNECTOME_CLICKHOUSE_URL": chdb_url,
        "CONNECTOME_CLICKHOUSE_DATABASE": database,
        "CONNECTOME_METADATA_URL": metadata_url,
    }.items():
        monkeypatch.setenv(key, value)
    a = deploy(clickhouse, database, metadata_store)
    out = tmp_path / "cache"

    assert main(["cache", "populate", "--dataset", "alpha", "--out", str(out)]) == 1
    stderr = capsys.readouterr().err.strip()
    assert stderr == f"connectome: `{PRODUCT}` has 2 rows for dataset alpha but has no analysis status; re-materialize `bottleneck_neurons`"

    record_bottleneck_status(clickhouse, database, metadata_store, a, "ok", 2)
    assert main(["cache", "populate", "--dataset", "alpha", "--out", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert re.fullmatch(r"alpha article cache: done, 1/1 tables, 2 rows in \d+ s, \S+ rows/s", lines[0]), lines  # the progress line
    assert lines[1].startswith(f"dataset alpha: article cache {out / 'alpha'}")
    assert lines[2].split() == [PRODUCT, "2", "rows", "(status", "ok)"]
    assert (out / "alpha" / f"{PRODUCT}.parquet").exists()

    assert main(["cache", "populate", "--dataset", "nope", "--out", str(out)]) == 2
    assert "'nope' is not registered" in capsys.readouterr().err

    # Without --out the cache goes to $CONNECTOME_ARTICLE_CACHE.
    monkeypatch.setenv("CONNECTOME_ARTICLE_CACHE", str(tmp_path / "default"))
    assert main(["cache", "populate", "--dataset", "alpha"]) == 0
    assert (tmp_path / "default" / "alpha" / "manifest.json").exists()
