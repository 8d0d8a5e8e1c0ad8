"""Source models read real release files onto the canonical schemas."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.feather as feather
import pytest

from connectome_assets.connectome import files
from connectome_assets.connectome.catalog import DatasetEntry
from connectome_assets.connectome.errors import CatalogError
from connectome_assets.connectome.filtering import AnnotatedNeuronSet, EndpointFilterStats, filter_to_annotated_endpoints
from connectome_assets.connectome.ingest import import_neurons, import_synapses
from connectome_assets.connectome.schemas import CONNECTION_SCHEMA, NEURON_SCHEMA
from connectome_assets.connectome.sources.cect import CectPackage, cect_cell_name, cect_neuron_id
from connectome_assets_tests.connectome._support import dataset_rows
from connectome_assets_tests.releases import entry, write_release


def _neurons(model_entry: DatasetEntry) -> list[dict]:
    table = model_entry.source_model().read_neurons()
    assert table.schema == NEURON_SCHEMA
    rows = table.to_pylist()
    for row in rows:
        row["attributes"] = list(row["attributes"])
    return rows


def _connections(model_entry: DatasetEntry) -> list[dict]:
    rows = []
    for batch in model_entry.source_model().iter_connections():
        assert batch.schema == CONNECTION_SCHEMA
        rows.extend(batch.to_pylist())
    return rows


def _by_id(rows: list[dict]) -> dict[int, dict]:
    return {row["neuron_id"]: row for row in rows}


# flyem_feather ---------------------------------------------------------------------------
def test_flyem_feather_without_polarity(tmp_path):
    sources = write_release(tmp_path, [10, 20, 30], [(10, 20, 4), (20, 30, 1), (30, 99, 2)])
    rows = _neurons(entry("mcns", sources))
    assert [r["neuron_id"] for r in rows] == [10, 20, 30]
    assert [r["polarity"] for r in rows] == ["", "", ""]
    assert [r["type"] for r in rows] == ["T0", "T1", "T2"]
    assert [r["name"] for r in rows] == ["T0_R", "T1_R", "T2_R"]  # name falls back to instance
    assert [r["status"] for r in rows] == ["Traced"] * 3
    assert all(r["attributes"] == [] for r in rows)
    assert _connections(entry("mcns", sources)) == [
        {"pre_neuron_id": 10, "post_neuron_id": 20, "weight": 4, "synapse_class": "", "neuropil": ""},
        {"pre_neuron_id": 20, "post_neuron_id": 30, "weight": 1, "synapse_class": "", "neuropil": ""},
        {"pre_neuron_id": 30, "post_neuron_id": 99, "weight": 2, "synapse_class": "", "neuropil": ""},
    ]


@pytest.mark.parametrize(
    ("polarity", "expected"),
    [
        pytest.param(pa.array(["excitatory", None, "inhibitory"]), ["excitatory", "", "inhibitory"], id="utf8"),
        pytest.param(pa.array([1, None, -1], pa.int8()), ["1", "", "-1"], id="int8"),
        pytest.param(pa.array(["excitatory", None, "excitatory"]).dictionary_encode(), ["excitatory", "", "excitatory"], id="dictionary"),
    ],
)
def test_flyem_feather_polarity(tmp_path, polarity, expected):
    sources = write_release(tmp_path, [1, 2, 3], [(1, 2, 1)], polarity=polarity)
    assert [r["polarity"] for r in _neurons(entry("mcns", sources))] == expected


def test_flyem_feather_extra_columns_land_in_attributes(tmp_path):
    extra = {
        "somaSide": pa.array(["L", "R", None]),  # canonical: soma_side, not an attribute
        "group": pa.array([100, None, 300], pa.int64()),
        "notes": pa.array(["", "odd shape", None]),
        "itolee_hl": pa.array(["x", "y", "z"]).dictionary_encode(),
        "somaLocation": pa.array([[1, 2, 3], None, [4, 5, 6]], pa.list_(pa.int64())),  # neuPrint's [x, y, z]
    }
    rows = _neurons(entry("mcns", write_release(tmp_path, [1, 2, 3], [], extra=extra)))
    assert [r["soma_side"] for r in rows] == ["L", "R", ""]
    assert [r["attributes"] for r in rows] == [
        [("group", "100"), ("itolee_hl", "x"), ("somaLocation", "[1, 2, 3]")],
        [("notes", "odd shape"), ("itolee_hl", "y")],
        [("group", "300"), ("itolee_hl", "z"), ("somaLocation", "[4, 5, 6]")],
    ]


def test_flyem_feather_neurotransmitters_merge_for_annotated_bodies_only(tmp_path):
    sources = write_release(tmp_path, [1, 2, 3], [(1, 2, 1)], extra={"group": pa.array([7, 8, 9], pa.int64())})
    nt_path = tmp_path / "body-neurotransmitters-test.feather"
    feather.write_feather(
        pa.table(
            {
                "body": pa.array([3, 1, 555], pa.int64()),  # 555 is not annotated; 2 has no row
                "predicted_nt": pa.array(["gaba", "acetylcholine", "glutamate"]),
                "predicted_nt_prob": pa.array([0.75, 0.5, 0.9]),
                "celltype_predicted_nt": pa.array([None, "acetylcholine", "glutamate"]),
            }
        ),
        nt_path,
    )
    sources["neurotransmitters"] = str(nt_path)
    rows = _by_id(_neurons(entry("mcns", sources)))
    assert sorted(rows) == [1, 2, 3]  # the side table never adds neurons
    assert rows[1]["attributes"] == [
        ("group", "7"),
        ("predicted_nt", "acetylcholine"),
        ("predicted_nt_prob", "0.5"),
        ("celltype_predicted_nt", "acetylcholine"),
    ]
    assert rows[2]["attributes"] == [("group", "8")]
    assert rows[3]["attributes"] == [("group", "9"), ("predicted_nt", "gaba"), ("predicted_nt_prob", "0.75")]
    assert all(v != "glutamate" for r in rows.values() for _, v in r["attributes"])


def test_flyem_feather_weights_with_synapse_class_and_several_record_batches(tmp_path):
    sources = write_release(tmp_path, [1, 2, 3], [])
    schema = pa.schema([("body_pre", pa.int64()), ("body_post", pa.int64()), ("weight", pa.int32()), ("synapse_class", pa.string()), ("roi", pa.string())])
    with pa.OSFile(sources["weights"], "wb") as sink, pa.ipc.new_file(sink, schema) as writer:
        writer.write_batch(pa.record_batch([pa.array([1, 2]), pa.array([2, 3]), pa.array([5, 6], pa.int32()), pa.array(["chemical", None]), pa.array(["AL(R)", "MB(L)"])], schema=schema))
        writer.write_batch(pa.record_batch([pa.array([3]), pa.array([1]), pa.array([7], pa.int32()), pa.array(["electrical"]), pa.array([None], pa.string())], schema=schema))
    assert _connections(entry("mcns", sources)) == [
        {"pre_neuron_id": 1, "post_neuron_id": 2, "weight": 5, "synapse_class": "chemical", "neuropil": "AL(R)"},
        {"pre_neuron_id": 2, "post_neuron_id": 3, "weight": 6, "synapse_class": "", "neuropil": "MB(L)"},
        {"pre_neuron_id": 3, "post_neuron_id": 1, "weight": 7, "synapse_class": "electrical", "neuropil": ""},
    ]


def test_flyem_feather_reads_file_uris(tmp_path):
    sources = write_release(tmp_path, [1, 2], [(1, 2, 3), (2, 1, 4)])
    as_uris = {key: Path(path).as_uri() for key, path in sources.items()}
    assert as_uris["weights"].startswith("file:///")
    assert _neurons(entry("mcns", as_uris)) == _neurons(entry("mcns", sources))
    assert _connections(entry("mcns", as_uris)) == _connections(entry("mcns", sources))


# neuprint_csv ------------------------------------------------------------------------------
NEUPRINT_NEURONS = "bodyId,type,instance,somaSide,cropped\n200,KC,KC_R,R,False\n100,PN,,L,\n300,,MBON01_R,,True\n"
NEUPRINT_CONNECTIONS = "bodyId_pre,bodyId_post,weight\n100,200,12\n200,300,3\n300,999,1\n"


def _write(path: Path, text: str) -> str:
    if path.name.endswith(".gz"):
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text)
    return str(path)


@pytest.mark.parametrize("suffix", [".csv", ".csv.gz"])
def test_neuprint_csv(tmp_path, suffix):
    sources = {
        "neurons": _write(tmp_path / f"traced-neurons{suffix}", NEUPRINT_NEURONS),
        "connections": _write(tmp_path / f"traced-total-connections{suffix}", NEUPRINT_CONNECTIONS),
    }
    model = entry("hemibrain", sources, model="neuprint_csv")
    rows = _neurons(model)
    assert [(r["neuron_id"], r["type"], r["instance"], r["name"], r["soma_side"]) for r in rows] == [
        (200, "KC", "KC_R", "KC_R", "R"),
        (100, "PN", "", "", "L"),
        (300, "", "MBON01_R", "MBON01_R", ""),
    ]
    assert [r["attributes"] for r in rows] == [[("cropped", "false")], [], [("cropped", "true")]]
    assert [(c["pre_neuron_id"], c["post_neuron_id"], c["weight"]) for c in _connections(model)] == [(100, 200, 12), (200, 300, 3), (300, 999, 1)]


# flywire_codex -----------------------------------------------------------------------------
ROOT = 720575940600000000


def test_flywire_codex(tmp_path):
    neurons = f"root_id,group,nt_type\n{ROOT + 1},AVLP.AVLP,ACH\n{ROOT + 2},,GABA\n{ROOT + 3},SMP.SMP,\n"
    classification = (
        "root_id,flow,super_class,class,sub_class,cell_type,side\n"
        f"{ROOT + 2},intrinsic,central,ALLN,,LN1,left\n"
        f"{ROOT + 1},afferent,sensory,olfactory,ORN,ORN_DA1,right\n"
        f"{ROOT + 9},efferent,motor,,,MN1,left\n"  # not an annotated neuron: ignored
    )
    connections = (
        "pre_root_id,post_root_id,neuropil,syn_count,nt_type\n"
        f"{ROOT + 1},{ROOT + 2},AL_R,17,ACH\n"
        f"{ROOT + 1},{ROOT + 2},LH_R,5,ACH\n"
        f"{ROOT + 2},{ROOT + 9},AL_L,3,GABA\n"
    )
    sources = {
        "neurons": _write(tmp_path / "neurons.csv.gz", neurons),
        "classification": _write(tmp_path / "classification.csv.gz", classification),
        "connections": _write(tmp_path / "connections.csv.gz", connections),
    }
    model = entry("flywire", sources, model="flywire_codex")
    rows = _by_id(_neurons(model))
    assert sorted(rows) == [ROOT + 1, ROOT + 2, ROOT + 3]
    one, two, three = rows[ROOT + 1], rows[ROOT + 2], rows[ROOT + 3]
    assert (one["type"], one["class"], one["superclass"], one["soma_side"]) == ("ORN_DA1", "olfactory", "sensory", "right")
    assert (two["type"], two["class"], two["superclass"], two["soma_side"]) == ("LN1", "ALLN", "central", "left")
    assert (three["type"], three["class"], three["superclass"], three["soma_side"]) == ("", "", "", "")
    assert one["attributes"] == [("group", "AVLP.AVLP"), ("nt_type", "ACH"), ("flow", "afferent"), ("sub_class", "ORN")]
    assert two["attributes"] == [("nt_type", "GABA"), ("flow", "intrinsic")]
    assert three["attributes"] == [("group", "SMP.SMP")]
    assert _connections(model) == [
        {"pre_neuron_id": ROOT + 1, "post_neuron_id": ROOT + 2, "weight": 17, "synapse_class": "ACH", "neuropil": "AL_R"},
        {"pre_neuron_id": ROOT + 1, "post_neuron_id": ROOT + 2, "weight": 5, "synapse_class": "ACH", "neuropil": "LH_R"},
        {"pre_neuron_id": ROOT + 2, "post_neuron_id": ROOT + 9, "weight": 3, "synapse_class": "GABA", "neuropil": "AL_L"},
    ]


# cect --------------------------------------------------------------------------------------
def test_cect_neuron_id_follows_the_documented_rule():
    for name in ["AS1", "ADAL", "MDL01", "CEPshDR", "ünï"]:
        digest = hashlib.blake2b(name.encode("utf-8"), digest_size=8).digest()
        expected = int.from_bytes(digest, "big") & ~(1 << 63)
        assert cect_neuron_id(name) == expected
        assert 0 <= cect_neuron_id(name) < 2**63
    assert cect_neuron_id("AS1") != cect_neuron_id("AS01")


def test_cect_cell_name():
    assert cect_cell_name(" AS01 ") == "AS1"
    assert cect_cell_name("VD09") == "VD9"
    assert cect_cell_name("ADAL ") == "ADAL"
    assert cect_neuron_id(cect_cell_name(" AS01 ")) == cect_neuron_id("AS1")


def test_cect_witvliet8_neurons_exclude_muscles_and_glia_and_the_filter_drops_them():
    model = DatasetEntry(name="witvliet8", model="cect", options={"reader": "WitvlietDataReader8"}, location="catalog/witvliet8.yaml")
    source = model.source_model()
    assert isinstance(source, CectPackage)
    neurons = source.read_neurons()
    names = set(neurons["name"].to_pylist())
    assert {"ADAL", "AVAL", "AVAR"} <= names
    assert not {"MDL01", "CEPshDR"} & names
    ids = neurons["neuron_id"].to_pylist()
    assert ids == [cect_neuron_id(n) for n in neurons["name"].to_pylist()]
    assert len(set(ids)) == len(ids)

    raw = json.loads(Path(source.path).read_text())
    assert {"MDL01", "CEPshDR"} <= {n.strip() for n in raw["nodes"]}

    batches = list(source.iter_connections())
    endpoints = {v for b in batches for c in ("pre_neuron_id", "post_neuron_id") for v in b[c].to_pylist()}
    muscle, glia = cect_neuron_id("MDL01"), cect_neuron_id("CEPshDR")
    assert muscle in endpoints and glia in endpoints
    assert {r for b in batches for r in b["synapse_class"].to_pylist()} == {"chemical", "electrical"}

    stats = EndpointFilterStats()
    kept = list(filter_to_annotated_endpoints(batches, AnnotatedNeuronSet(neurons["neuron_id"]), stats))
    kept_ids = {v for b in kept for c in ("pre_neuron_id", "post_neuron_id") for v in b[c].to_pylist()}
    assert kept_ids <= set(ids)
    assert muscle not in kept_ids and glia not in kept_ids
    assert stats.rows_dropped > 0 and stats.rows_kept > 0
    assert stats.rows_read == sum(b.num_rows for b in batches)


def test_cect_unknown_reader_lists_available_ones():
    location = "catalog/worm.yaml"
    with pytest.raises(CatalogError) as caught:
        DatasetEntry(name="worm", model="cect", options={"reader": "NoSuchReader"}, location=location).source_model()
    assert caught.value.location == location
    assert "'NoSuchReader'" in caught.value.problem
    assert "WitvlietDataReader8" in caught.value.problem and "Cook2019HermReader" in caught.value.problem


# gs:// ---------------------------------------------------------------------------------------
def test_gs_source_imports_the_same_rows_as_local_files(tmp_path, gcs_bucket, clickhouse, database, metadata_store):
    body_ids = [5, 6, 7, 2**62 + 1, 2**63 - 2]
    edges = [(5, 6, 3), (6, 7, 1), (7, 2**62 + 1, 9), (2**62 + 1, 5, 2), (5, 404, 8), (2**63 - 2, 2**63 - 2, 4), (405, 406, 1)]
    local = write_release(tmp_path / "release", body_ids, edges, polarity=pa.array([1, -1, None, 1, -1], pa.int8()), extra={"group": pa.array([1, 2, 3, None, 5], pa.int64())})
    remote = {}
    for key, path in local.items():
        gcs_bucket.blob(f"releases/v1/{os.path.basename(path)}").upload_from_filename(path)
        remote[key] = f"gs://{gcs_bucket.name}/releases/v1/{os.path.basename(path)}"

    results = {}
    for name, sources in {"local": local, "remote": remote}.items():
        ds = entry(name, sources)
        # The progress total: a local file's batch metadata is cheap, a remote one's is a request per batch.
        assert ds.source_model().connection_rows() == (7 if name == "local" else None)
        neurons = import_neurons(ds, clickhouse, database, metadata_store)
        synapses = import_synapses(ds, clickhouse, database, metadata_store)
        assert neurons.rows_written == 5
        assert synapses.rows_written == 5
        assert (synapses.filter.dropped_post_missing, synapses.filter.dropped_both_missing) == (1, 1)
        results[name] = {table: dataset_rows(clickhouse, database, table, neurons.dataset_id) for table in ("neurons", "synapses")}
        assert metadata_store.table_state(neurons.dataset_id, "synapses").row_count == 5

    assert results["remote"] == results["local"]
    assert [r["polarity"] for r in results["remote"]["neurons"]] == ["1", "-1", "", "1", "-1"]
    assert results["remote"]["synapses"][0] == {"pre_neuron_id": 5, "post_neuron_id": 6, "weight": 3, "synapse_class": "", "neuropil": ""}


def test_gs_fingerprint_changes_when_the_object_changes(gcs_bucket):
    blob = gcs_bucket.blob("a/weights.feather")
    blob.upload_from_string(b"first version")
    uri = f"gs://{gcs_bucket.name}/a/weights.feather"
    first = files.fingerprint(uri)
    assert files.fingerprint(uri) == first
    blob.upload_from_string(b"second, longer version")
    assert files.fingerprint(uri) != first


# fingerprints ------------------------------------------------------------------------------
def test_fingerprint_changes_when_a_source_file_changes(tmp_path):
    sources = write_release(tmp_path, [1, 2], [(1, 2, 1)])
    model = entry("ds", sources).source_model()
    first = model.fingerprint()
    assert model.fingerprint() == first  # reading twice is stable

    write_release(tmp_path, [1, 2], [(1, 2, 1), (2, 1, 5)])  # new edges: a bigger weights file
    second = model.fingerprint()
    assert second != first

    weights = Path(sources["weights"])
    stat = weights.stat()
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))  # same size, touched
    third = model.fingerprint()
    assert third not in (first, second)

    annotations = Path(sources["annotations"])
    stat = annotations.stat()
    os.utime(annotations, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert model.fingerprint() not in (first, second, third)


def test_fingerprint_depends_on_every_source_and_not_their_order(tmp_path):
    a = write_release(tmp_path / "a", [1, 2], [(1, 2, 1)])
    b = write_release(tmp_path / "b", [1, 2, 3], [(1, 2, 1)])
    assert files.combined_fingerprint([a["annotations"], a["weights"]]) == files.combined_fingerprint([a["weights"], a["annotations"]])
    assert files.combined_fingerprint([a["annotations"], a["weights"]]) != files.combined_fingerprint([b["annotations"], a["weights"]])
    assert np.unique([files.fingerprint(u).token for u in (*a.values(), *b.values())]).size == 4
