"""Detection on real files: Parquet (local and on fake-gcs-server), Delta, neuroglancer volumes, formats without a reader."""

from __future__ import annotations

import gzip
import json
import os
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import unquote

import deltalake
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from connectome_assets.registry.detect import FORMATS, Column, DataFile, detect, normalize_type, schema_diff
from connectome_assets.registry.errors import Invalid


def features(rows: int, start: int = 0) -> pa.Table:
    return pa.table(
        {
            "id": pa.array(range(start, start + rows), pa.uint64()),
            "label": pa.array([f"n{i}" for i in range(rows)], pa.string()),
            "score": pa.array([i / 2 for i in range(rows)], pa.float64()),
            "embedding": pa.array([[float(i), 1.0] for i in range(rows)], pa.list_(pa.float32())),
            "seen_at": pa.array([datetime(2024, 1, 1, tzinfo=timezone.utc)] * rows, pa.timestamp("us", tz="UTC")),
        }
    )


FEATURE_COLUMNS = [
    Column("id", "uint64"),
    Column("label", "string"),
    Column("score", "double"),
    Column("embedding", "list<item: float>"),
    Column("seen_at", "timestamp[us, tz=UTC]"),
]
# Delta has no unsigned integers: the writer stores uint64 as long.
DELTA_COLUMNS = [Column("id", "int64"), *FEATURE_COLUMNS[1:]]


def write(path: Path, table: pa.Table) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)
    return path


def local_file(path: Path, rows: int | None) -> DataFile:
    return DataFile(f"file://{path}", os.path.getsize(path), rows)


def upload_tree(bucket, root: Path, prefix: str) -> None:
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        bucket.blob(f"{prefix}/{path.relative_to(root).as_posix()}").upload_from_filename(str(path))


# Parquet ----------------------------------------------------------------------------------
def test_a_single_parquet_file_is_described_from_its_footer(tmp_path: Path) -> None:
    path = write(tmp_path / "t.parquet", features(7))
    for location in (f"file://{path}", str(path)):
        found = detect(location, "parquet")
        assert found.format == "parquet"
        assert found.columns == FEATURE_COLUMNS
        assert found.files == [local_file(path, 7)]
        assert (found.bytes, found.rows) == (os.path.getsize(path), 7)
        assert (found.partition_columns, found.volume, found.note) == ([], None, "")


def test_a_hive_partitioned_directory_adds_its_keys_and_ignores_hidden_files(tmp_path: Path) -> None:
    root = tmp_path / "t"
    parts = [
        write(root / "year=2023" / "region=a" / "part-0.parquet", features(3)),
        write(root / "year=2023" / "region=b" / "part-0.parquet", features(4, start=3)),
        write(root / "year=2024" / "region=a" / "part-1.parquet", features(5, start=7)),
    ]
    (root / "_SUCCESS").write_bytes(b"")
    (root / "_common_metadata").write_bytes(b"not parquet")
    (root / "year=2024" / ".tmp-x.parquet").write_bytes(b"half-written")
    write(root / "_temporary" / "part-9.parquet", pa.table({"other": [1]}))

    found = detect(f"file://{root}/", "parquet")
    assert found.partition_columns == ["year", "region"]
    assert found.columns == [*FEATURE_COLUMNS, Column("year", "int32"), Column("region", "string")]
    assert found.files == [local_file(parts[0], 3), local_file(parts[1], 4), local_file(parts[2], 5)]
    assert (found.rows, found.bytes) == (12, sum(os.path.getsize(p) for p in parts))


def test_parquet_on_gcs_is_listed_and_read_through_the_emulator(tmp_path: Path, gcs_bucket) -> None:
    local = tmp_path / "t"
    write(local / "shard=0" / "part-0.parquet", features(2))
    write(local / "shard=1" / "part-0.parquet", features(6, start=2))
    (local / "_SUCCESS").write_bytes(b"")
    upload_tree(gcs_bucket, local, "features/t")

    found = detect(f"gs://{gcs_bucket.name}/features/t", "parquet")
    assert found.files == [
        DataFile(f"gs://{gcs_bucket.name}/features/t/shard=0/part-0.parquet", os.path.getsize(local / "shard=0" / "part-0.parquet"), 2),
        DataFile(f"gs://{gcs_bucket.name}/features/t/shard=1/part-0.parquet", os.path.getsize(local / "shard=1" / "part-0.parquet"), 6),
    ]
    assert (found.columns, found.partition_columns, found.rows) == ([*FEATURE_COLUMNS, Column("shard", "int32")], ["shard"], 8)

    single = detect(f"gs://{gcs_bucket.name}/features/t/shard=1/part-0.parquet", "parquet")
    assert (single.files, single.columns, single.partition_columns) == ([found.files[1]], FEATURE_COLUMNS, [])


def test_a_truncated_parquet_file_is_named(tmp_path: Path) -> None:
    write(tmp_path / "t" / "part-0.parquet", features(3))
    broken = write(tmp_path / "t" / "part-1.parquet", features(300))
    broken.write_bytes(broken.read_bytes()[: os.path.getsize(broken) // 2])
    with pytest.raises(Invalid, match=rf"^file://{broken} is not a readable Parquet file \(.+\)$"):
        detect(f"file://{tmp_path / 't'}", "parquet")
    with pytest.raises(Invalid, match=rf"^file://{broken} is not a readable Parquet file"):
        detect(f"file://{broken}", "parquet")


def test_files_whose_schemas_disagree_are_named_with_the_first_differing_column(tmp_path: Path) -> None:
    first = write(tmp_path / "t" / "part-0.parquet", features(3))
    other = features(3).set_column(2, "score", pa.array(["a", "b", "c"]))
    second = write(tmp_path / "t" / "part-1.parquet", other)
    with pytest.raises(Invalid) as refused:
        detect(f"file://{tmp_path / 't'}", "parquet")
    assert refused.value.message == f"file://{second} and file://{first} disagree on column 'score' (string vs double)"

    write(tmp_path / "u" / "part-0.parquet", features(3))
    extra = write(tmp_path / "u" / "part-1.parquet", features(3).append_column("weight", pa.array([1, 2, 3], pa.int32())))
    with pytest.raises(Invalid, match=rf"^file://{extra} and .* disagree on column 'weight' \(int32 vs absent\)$"):
        detect(f"file://{tmp_path / 'u'}", "parquet")


def test_a_directory_without_parquet_files_is_refused(tmp_path: Path) -> None:
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "_SUCCESS").write_bytes(b"")
    (tmp_path / "t" / "notes.txt").write_text("hello")
    with pytest.raises(Invalid, match=rf"^file://{tmp_path / 't'} contains no Parquet files$"):
        detect(f"file://{tmp_path / 't'}", "parquet")


def test_nested_types_get_one_canonical_spelling(tmp_path: Path) -> None:
    table = pa.table(
        {
            "m": pa.array([[("a", 1)]], pa.map_(pa.string(), pa.int64())),
            "s": pa.array([{"x": [1]}], pa.struct([("x", pa.list_(pa.int32()))])),
            "f": pa.array([[1.0, 2.0]], pa.list_(pa.float32(), 2)),
        }
    )
    found = detect(str(write(tmp_path / "n.parquet", table)), "parquet")
    assert found.columns == [
        Column("m", "map<string, int64>"),
        Column("s", "struct<x: list<item: int32>>"),
        Column("f", "fixed_size_list<item: float>[2]"),
    ]


# Delta ------------------------------------------------------------------------------------
def _add_actions(table: deltalake.DeltaTable) -> list[dict]:
    return pa.table(table.get_add_actions(flatten=True)).select(["path", "size_bytes", "num_records"]).to_pylist()


def test_a_partitioned_delta_table_is_described_from_its_log(tmp_path: Path) -> None:
    root = tmp_path / "dt"
    # "c d" is stored in a directory named `region=c%20d` and URL-encoded once more in the log.
    data = features(6).append_column("region", pa.array(["a", "b", "a", "b", "a", "c d"]))
    deltalake.write_deltalake(str(root), data, partition_by=["region"])

    found = detect(f"file://{root}", "delta")
    table = deltalake.DeltaTable(str(root))
    actions = _add_actions(table)
    assert found.columns == [*DELTA_COLUMNS, Column("region", "string")]
    assert found.partition_columns == ["region"]
    assert found.files == sorted(
        (DataFile(f"file://{root}/{unquote(a['path'])}", a["size_bytes"], a["num_records"]) for a in actions), key=lambda f: f.uri
    )
    assert sorted(f.uri for f in found.files) == sorted(f"file://{u}" for u in table.file_uris())
    assert [f.bytes for f in found.files] == [os.path.getsize(f.uri.removeprefix("file://")) for f in found.files]
    assert (len(found.files), found.rows, found.bytes) == (3, 6, sum(a["size_bytes"] for a in actions))

    deltalake.write_deltalake(str(root), features(4, start=6).append_column("region", pa.array(["a", "d", "d", "d"])), mode="append")
    grown = detect(f"file://{root}", "delta")
    assert (len(grown.files), grown.rows) == (5, 10)
    assert set(found.files) < set(grown.files)


def test_a_delta_table_on_gcs_is_read_through_the_emulator(tmp_path: Path, gcs_bucket) -> None:
    local = tmp_path / "dt"
    deltalake.write_deltalake(str(local), features(5).append_column("region", pa.array(["a", "a", "b", "b", "b"])), partition_by=["region"])
    upload_tree(gcs_bucket, local, "tables/dt")

    found = detect(f"gs://{gcs_bucket.name}/tables/dt", "delta")
    expected = [
        DataFile(f"gs://{gcs_bucket.name}/tables/dt/{a['path']}", a["size_bytes"], a["num_records"])
        for a in _add_actions(deltalake.DeltaTable(str(local)))
    ]
    assert found.files == sorted(expected, key=lambda f: f.uri)
    assert (found.rows, found.partition_columns, found.columns) == (5, ["region"], [*DELTA_COLUMNS, Column("region", "string")])


def test_a_directory_without_a_delta_log_is_not_a_delta_table(tmp_path: Path) -> None:
    write(tmp_path / "t" / "part-0.parquet", features(2))
    with pytest.raises(Invalid, match=rf"^file://{tmp_path / 't'} is not a Delta table \(it has no readable `_delta_log`\)$"):
        detect(f"file://{tmp_path / 't'}", "delta")


# neuroglancer precomputed -----------------------------------------------------------------
INFO = {
    "@type": "neuroglancer_multiscale_volume",
    "type": "segmentation",
    "data_type": "uint64",
    "num_channels": 1,
    "scales": [
        {
            "key": "s0",
            "size": [128, 128, 64],
            "resolution": [8, 8, 40],
            "voxel_offset": [0, 0, 0],
            "chunk_sizes": [[64, 64, 32]],
            "encoding": "compressed_segmentation",
        },
        {
            "key": "s1",
            "size": [64, 64, 64],
            "resolution": [16, 16, 40],
            "voxel_offset": [0, 0, 0],
            "chunk_sizes": [[64, 64, 64]],
            "encoding": "raw",
            "sharding": {"@type": "neuroglancer_uint64_sharded_v1", "shard_bits": 1},
        },
    ],
}


def test_a_neuroglancer_volume_is_described_from_its_info_file(tmp_path: Path) -> None:
    root = tmp_path / "vol"
    (root / "s0" / "sub").mkdir(parents=True)
    (root / "s1").mkdir()
    (root / "mesh").mkdir()
    (root / "info").write_text(json.dumps(INFO))
    (root / "s0" / "0-64_0-64_0-32").write_bytes(b"a" * 10)
    (root / "s0" / "sub" / "64-128_0-64_0-32").write_bytes(b"b" * 20)
    (root / "s1" / "0.shard").write_bytes(b"c" * 30)
    (root / "mesh" / "1").write_bytes(b"not a scale")

    found = detect(f"precomputed://file://{root}/", "neuroglancer_precomputed")
    assert (found.columns, found.rows, found.partition_columns) == (None, None, [])
    assert found.volume == {
        "type": "segmentation",
        "data_type": "uint64",
        "num_channels": 1,
        "scales": [
            {
                "key": "s0",
                "size": [128, 128, 64],
                "resolution": [8, 8, 40],
                "voxel_offset": [0, 0, 0],
                "chunk_sizes": [[64, 64, 32]],
                "encoding": "compressed_segmentation",
                "sharding": None,
            },
            {
                "key": "s1",
                "size": [64, 64, 64],
                "resolution": [16, 16, 40],
                "voxel_offset": [0, 0, 0],
                "chunk_sizes": [[64, 64, 64]],
                "encoding": "raw",
                "sharding": INFO["scales"][1]["sharding"],
            },
        ],
    }
    assert found.files == [
        local_file(root / "info", None),
        local_file(root / "s0" / "0-64_0-64_0-32", None),
        local_file(root / "s0" / "sub" / "64-128_0-64_0-32", None),
        local_file(root / "s1" / "0.shard", None),
    ]
    assert found.bytes == os.path.getsize(root / "info") + 60


def test_a_gzip_compressed_info_file_on_gcs_is_read(gcs_bucket) -> None:
    gcs_bucket.blob("vol/info").upload_from_string(gzip.compress(json.dumps(INFO).encode()))
    gcs_bucket.blob("vol/s1/0.shard").upload_from_string(b"c" * 30)

    found = detect(f"precomputed://gs://{gcs_bucket.name}/vol", "neuroglancer_precomputed")
    assert (found.volume["data_type"], [s["key"] for s in found.volume["scales"]]) == ("uint64", ["s0", "s1"])
    assert [(f.uri, f.bytes) for f in found.files] == [
        (f"gs://{gcs_bucket.name}/vol/info", gcs_bucket.get_blob("vol/info").size),
        (f"gs://{gcs_bucket.name}/vol/s1/0.shard", 30),
    ]


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (None, "{location} has no neuroglancer `info` file"),
        ("{not json", "{location}/info is not valid JSON"),
        (json.dumps({"data_type": "uint8"}), "{location}/info has no `scales`"),
        (json.dumps({"scales": INFO["scales"]}), "{location}/info has no `data_type`"),
        (json.dumps({**INFO, "scales": [{"size": [1, 1, 1], "resolution": [1, 1, 1]}]}), "{location}/info scale 0 has no valid `key`"),
    ],
)
def test_a_volume_without_a_usable_info_file_is_refused(tmp_path: Path, content: str | None, problem: str) -> None:
    (tmp_path / "vol" / "s0").mkdir(parents=True)
    (tmp_path / "vol" / "s0" / "chunk").write_bytes(b"x")
    if content is not None:
        (tmp_path / "vol" / "info").write_text(content)
    location = f"file://{tmp_path / 'vol'}"
    with pytest.raises(Invalid) as refused:
        detect(location, "neuroglancer_precomputed")
    assert refused.value.message.startswith(problem.format(location=location))


# formats without a reader, and refusals ---------------------------------------------------
@pytest.mark.parametrize(("fmt", "module"), [("lance", "lance"), ("iceberg", "pyiceberg")])
def test_formats_without_a_reader_list_their_files_and_say_so(tmp_path: Path, fmt: str, module: str) -> None:
    root = tmp_path / "t"
    (root / "data").mkdir(parents=True)
    (root / "data" / "0.bin").write_bytes(b"x" * 100)
    (root / "_versions").mkdir()
    (root / "_versions" / "1.manifest").write_bytes(b"y" * 7)

    found = detect(f"file://{root}", fmt)
    assert (found.format, found.columns, found.rows, found.volume, found.bytes) == (fmt, None, None, None, 107)
    assert found.files == [local_file(root / "_versions" / "1.manifest", None), local_file(root / "data" / "0.bin", None)]
    assert (
        found.note == f"format {fmt} is not supported for detection here (no {module} reader installed); the declared schema is recorded as declared"
    )


def test_an_unknown_format_is_refused(tmp_path: Path) -> None:
    with pytest.raises(Invalid) as refused:
        detect(f"file://{tmp_path}", "csv")
    assert refused.value.message == f"unknown format 'csv' (one of {', '.join(FORMATS)})"
    assert refused.value.status == 422


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_missing_local_location_is_refused(tmp_path: Path, fmt: str) -> None:
    with pytest.raises(Invalid) as refused:
        detect(f"file://{tmp_path}/nothing", fmt)
    assert refused.value.message == f"file://{tmp_path}/nothing does not exist"


def test_a_missing_gcs_location_is_refused(gcs_bucket) -> None:
    gcs_bucket.blob("present/x.parquet").upload_from_string(b"x")
    for location in (f"gs://{gcs_bucket.name}/absent", f"gs://{gcs_bucket.name}/present/x", f"gs://{gcs_bucket.name}-missing/t"):
        with pytest.raises(Invalid) as refused:
            detect(location, "parquet")
        assert refused.value.message == f"{location} does not exist"


def test_a_file_is_refused_where_a_directory_format_is_expected(tmp_path: Path) -> None:
    path = write(tmp_path / "t.parquet", features(1))
    with pytest.raises(Invalid, match=rf"^file://{path} is a file, but a delta location is a directory$"):
        detect(f"file://{path}", "delta")


# declared types ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("declared", "canonical"),
    [
        ("utf8", "string"),
        ("str", "string"),
        (" float64 ", "double"),
        ("float32", "float"),
        ("INT64", "int64"),
        ("bool", "bool"),
        ("int", "int"),
        ("list<item: float>", "list<item: float>"),
        ("list<element: float>", "list<item: float>"),
        ("struct<x: large_list<element: int32>>", "struct<x: large_list<item: int32>>"),
        ("timestamp[us, tz=UTC]", "timestamp[us, tz=UTC]"),
    ],
)
def test_normalize_type_resolves_aliases(declared: str, canonical: str) -> None:
    assert normalize_type(declared) == canonical


def test_schema_diff_reports_missing_undeclared_and_type_problems() -> None:
    detected = [Column("id", "uint64"), Column("label", "string"), Column("score", "double"), Column("weight", "int32")]
    assert schema_diff([Column("id", "uint64"), Column("label", "utf8"), Column("score", "float64"), Column("weight", "int32")], detected) == []
    declared = [Column("id", "int64"), Column("soma_distance", "double"), Column("label", "str"), Column("score", "float32")]
    assert schema_diff(declared, detected) == [
        {"column": "id", "problem": "type", "declared": "int64", "detected": "uint64"},
        {"column": "soma_distance", "problem": "missing", "declared": "double", "detected": None},
        {"column": "score", "problem": "type", "declared": "float32", "detected": "double"},
        {"column": "weight", "problem": "undeclared", "declared": None, "detected": "int32"},
    ]
