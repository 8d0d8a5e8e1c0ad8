"""Bad input is a SourceError naming the file (or catalog entry) and the problem, and it changes nothing.

Every case first imports a good release for dataset `ds` (neurons and synapses), then points the
catalog entry at the bad input and attempts the import again: the dataset's ClickHouse rows and
its `dataset_table_state` rows must be exactly as before.
"""

from __future__ import annotations

import gzip
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.feather as feather
import pytest

from connectome_assets.connectome.catalog import DatasetEntry, entry_path, load_entry
from connectome_assets.connectome.errors import CatalogError, SourceError
from connectome_assets.connectome.ingest import import_neurons, import_synapses
from connectome_assets_tests.connectome._support import dataset_rows
from connectome_assets_tests.releases import write_release

NAME = "ds"
BODY_IDS = [11, 22, 33, 44]
EDGES = [(11, 22, 5), (22, 33, 2), (33, 44, 7), (44, 11, 1), (11, 999, 3)]

NEUPRINT_NEURONS = "bodyId,type,instance\n11,A,A_R\n22,B,B_R\n33,C,C_L\n44,D,D_L\n"
NEUPRINT_CONNECTIONS = "bodyId_pre,bodyId_post,weight\n" + "".join(f"{a},{b},{w}\n" for a, b, w in EDGES)


@dataclass(frozen=True)
class Setup:
    """What a case produced: the dataset name to load and where the error must point."""

    name: str
    location: str
    problem: str
    synapses_too: bool  # the bad input also stops a synapse import


@dataclass(frozen=True)
class Case:
    id: str
    model: str
    make: Callable[[Path, Path, dict[str, str]], Setup]


# Writing bad inputs --------------------------------------------------------------------------
def _write_entry(catalog: Path, sources: dict[str, str], model: str, name: str = NAME) -> Path:
    path = entry_path(catalog, name)
    path.write_text(DatasetEntry(name=name, model=model, sources=sources).as_yaml())
    return path


def _feather(path: Path, columns: dict[str, pa.Array]) -> str:
    feather.write_feather(pa.table(columns), path)
    return str(path)


def _bad_file(model: str, key: str, path: Path, problem: str) -> Callable[[Path, Path, dict[str, str]], Setup]:
    """A case that replaces source `key` by the file `write(path)` creates."""

    def make(write: Callable[[Path], None]):
        def run(tmp: Path, catalog: Path, good: dict[str, str]) -> Setup:
            bad = tmp / "bad" / path
            bad.parent.mkdir(parents=True, exist_ok=True)
            write(bad)
            _write_entry(catalog, {**good, key: str(bad)}, model)
            return Setup(NAME, str(bad), problem, synapses_too=key in ("weights", "connections"))

        return run

    return make


def _half(source: str) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        data = Path(source).read_bytes()
        path.write_bytes(data[: len(data) // 2])

    return write


def _good_weights_columns() -> dict[str, pa.Array]:
    pre, post, weight = zip(*EDGES)
    return {"body_pre": pa.array(pre, pa.int64()), "body_post": pa.array(post, pa.int64()), "weight": pa.array(weight, pa.int32())}


def _good_annotation_columns(ids=BODY_IDS, id_type=pa.int64()) -> dict[str, pa.Array]:
    return {"bodyId": pa.array(ids, id_type), "type": pa.array(["T"] * len(ids))}


def _csv_gz_truncated(text: str) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        data = gzip.compress(text.encode())
        path.write_bytes(data[: len(data) // 2])

    return write


def _catalog_case(body: Callable[[Path, dict[str, str]], str | None], problem: str, name: str = NAME):
    """A case whose catalog entry text is `body(...)` (None: no entry for `name` at all)."""

    def run(tmp: Path, catalog: Path, good: dict[str, str]) -> Setup:
        text = body(catalog, good)
        if text is not None:
            entry_path(catalog, name).write_text(text)
        return Setup(name, str(entry_path(catalog, name)), problem, synapses_too=True)

    return run


def _yaml(model: str, sources: dict[str, str]) -> str:
    return DatasetEntry(name=NAME, model=model, sources=sources).as_yaml()


def _annotations_half(path: Path) -> None:
    _half(str(path.parent.parent / "good" / "body-annotations-test.feather"))(path)


def _weights_half(path: Path) -> None:
    _half(str(path.parent.parent / "good" / "connectome-weights-test.feather"))(path)


FF, NP = "flyem_feather", "neuprint_csv"
CASES = [
    # missing required column
    Case("annotations-missing-bodyId", FF, _bad_file(FF, "annotations", Path("ann.feather"), "missing required column 'bodyId'")(
        lambda p: _feather(p, {"id": pa.array(BODY_IDS, pa.int64()), "type": pa.array(["T"] * 4)}))),
    Case("weights-missing-weight", FF, _bad_file(FF, "weights", Path("w.feather"), "missing required column 'weight'")(
        lambda p: _feather(p, {k: v for k, v in _good_weights_columns().items() if k != "weight"}))),
    Case("csv-connections-missing-weight", NP, _bad_file(NP, "connections", Path("c.csv"), "missing required column 'weight'")(
        lambda p: p.write_text("bodyId_pre,bodyId_post,count\n11,22,5\n"))),
    # wrong dtype
    Case("annotations-bodyId-float64", FF, _bad_file(FF, "annotations", Path("ann.feather"), "column 'bodyId' has type double")(
        lambda p: _feather(p, _good_annotation_columns([11.0, 22.0, 33.0, 44.0], pa.float64())))),
    Case("weights-weight-string", FF, _bad_file(FF, "weights", Path("w.feather"), "column 'weight' has type string")(
        lambda p: _feather(p, {**_good_weights_columns(), "weight": pa.array([str(e[2]) for e in EDGES])}))),
    Case("weights-body_pre-float64", FF, _bad_file(FF, "weights", Path("w.feather"), "column 'body_pre' has type double")(
        lambda p: _feather(p, {**_good_weights_columns(), "body_pre": pa.array([float(e[0]) for e in EDGES])}))),
    Case("csv-weight-not-a-number", NP, _bad_file(NP, "connections", Path("c.csv"), "'abc'")(
        lambda p: p.write_text("bodyId_pre,bodyId_post,weight\n11,22,abc\n"))),
    # empty (0-byte) Feather
    Case("annotations-empty-feather", FF, _bad_file(FF, "annotations", Path("ann.feather"), "is empty (0 bytes)")(lambda p: p.write_bytes(b""))),
    Case("weights-empty-feather", FF, _bad_file(FF, "weights", Path("w.feather"), "is empty (0 bytes)")(lambda p: p.write_bytes(b""))),
    # truncated Feather
    Case("annotations-truncated-feather", FF, _bad_file(FF, "annotations", Path("ann.feather"), "truncated")(_annotations_half)),
    Case("weights-truncated-feather", FF, _bad_file(FF, "weights", Path("w.feather"), "truncated")(_weights_half)),
    Case("not-a-feather", FF, _bad_file(FF, "weights", Path("w.feather"), "not a Feather")(lambda p: p.write_text("body_pre,body_post,weight\n1,2,3\n"))),
    # empty CSV
    Case("csv-neurons-empty", NP, _bad_file(NP, "neurons", Path("n.csv"), "is empty")(lambda p: p.write_bytes(b""))),
    Case("csv-connections-empty", NP, _bad_file(NP, "connections", Path("c.csv"), "is empty")(lambda p: p.write_bytes(b""))),
    # truncated .csv.gz
    Case("csv-gz-neurons-truncated", NP, _bad_file(NP, "neurons", Path("n.csv.gz"), "runcated")(_csv_gz_truncated(NEUPRINT_NEURONS * 50))),
    Case("csv-gz-connections-truncated", NP, _bad_file(NP, "connections", Path("c.csv.gz"), "runcated")(_csv_gz_truncated(NEUPRINT_CONNECTIONS * 50))),
    # duplicate neuron ids
    Case("annotations-duplicate-ids", FF, _bad_file(FF, "annotations", Path("ann.feather"), "duplicate neuron id")(
        lambda p: _feather(p, _good_annotation_columns([11, 22, 22, 44])))),
    Case("csv-neurons-duplicate-ids", NP, _bad_file(NP, "neurons", Path("n.csv"), "duplicate neuron id")(
        lambda p: p.write_text("bodyId,type\n11,A\n22,B\n11,C\n"))),
    # missing source path
    Case("annotations-path-missing", FF, _bad_file(FF, "annotations", Path("gone.feather"), "does not exist")(lambda p: None)),
    Case("weights-path-missing", FF, _bad_file(FF, "weights", Path("gone.feather"), "does not exist")(lambda p: None)),
]

# Catalog entries: nothing to import, the entry itself is refused.
CATALOG_CASES = [
    Case("unknown-source-model", FF, _catalog_case(lambda c, good: _yaml("flyem_parquet", good), "unknown source model 'flyem_parquet'")),
    Case("missing-source-key", FF, _catalog_case(lambda c, good: _yaml(FF, {"annotations": good["annotations"]}), "needs source(s) weights")),
    Case("unknown-source-key", FF, _catalog_case(lambda c, good: _yaml(FF, {**good, "synapses": good["weights"]}), "no source named synapses")),
    Case("entry-not-valid-yaml", FF, _catalog_case(lambda c, good: "name: ds\nmodel: [flyem_feather\nsources: {}\n", "is not valid YAML")),
    Case("entry-not-a-mapping", FF, _catalog_case(lambda c, good: "- just\n- a list\n", "must be a YAML mapping")),
    Case("entry-names-another-dataset", FF, _catalog_case(lambda c, good: _yaml(FF, good).replace("name: ds", "name: other"), "names dataset 'other'")),
    Case("unknown-dataset-name", FF, _catalog_case(lambda c, good: None, "unknown dataset 'nope'", name="nope")),
]


# The test ------------------------------------------------------------------------------------
def _good_release(tmp: Path, model: str) -> dict[str, str]:
    good = tmp / "good"
    if model == FF:
        return write_release(good, BODY_IDS, EDGES)
    good.mkdir(parents=True)
    neurons, connections = good / "traced-neurons.csv.gz", good / "traced-total-connections.csv"
    neurons.write_bytes(gzip.compress(NEUPRINT_NEURONS.encode()))
    connections.write_text(NEUPRINT_CONNECTIONS)
    return {"neurons": str(neurons), "connections": str(connections)}


def _snapshot(client, database, store) -> dict:
    dataset_id = store.dataset_id(NAME)
    return {
        "datasets": store.dataset_names(),
        "neurons": dataset_rows(client, database, "neurons", dataset_id),
        "synapses": dataset_rows(client, database, "synapses", dataset_id),
        "neurons_state": store.table_state(dataset_id, "neurons"),
        "synapses_state": store.table_state(dataset_id, "synapses"),
    }


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_a_clear_error_and_changes_nothing(case: Case, tmp_path, clickhouse, database, metadata_store):
    catalog = tmp_path / "catalog"
    catalog.mkdir()
    good = _good_release(tmp_path, case.model)
    _write_entry(catalog, good, case.model)
    import_neurons(load_entry(catalog, NAME), clickhouse, database, metadata_store)
    import_synapses(load_entry(catalog, NAME), clickhouse, database, metadata_store)
    before = _snapshot(clickhouse, database, metadata_store)
    assert len(before["neurons"]) == 4 and len(before["synapses"]) == 4
    assert before["neurons_state"].upload_state == before["synapses_state"].upload_state == "uploaded"
    assert before["synapses_state"].uploaded_at is not None

    setup = case.make(tmp_path, catalog, good)
    attempts = [import_neurons] + ([import_synapses] if setup.synapses_too else [])
    for attempt in attempts:
        with pytest.raises(SourceError) as caught:
            attempt(load_entry(catalog, setup.name), clickhouse, database, metadata_store)
        error = caught.value
        message = str(error)
        assert error.location == setup.location, message
        assert message == f"{setup.location}: {error.problem}"
        assert setup.problem in error.problem, message
        assert "\n" not in message and error.problem.strip() and len(error.problem) < 400

    assert _snapshot(clickhouse, database, metadata_store) == before


def test_unknown_dataset_lists_known_ones(tmp_path):
    catalog = tmp_path / "catalog"
    catalog.mkdir()
    for name in ("alpha", "beta"):
        _write_entry(catalog, {"annotations": "a.feather", "weights": "w.feather"}, FF, name=name)
    with pytest.raises(CatalogError) as caught:
        load_entry(catalog, "gamma")
    assert caught.value.location == str(catalog / "gamma.yaml")
    assert "known: alpha, beta" in caught.value.problem
    with pytest.raises(CatalogError, match="known: none"):
        load_entry(tmp_path / "no-catalog", "gamma")


def test_bad_values_found_while_streaming_keep_the_previous_rows(tmp_path, clickhouse, database, metadata_store):
    """Values only seen row by row (fractional weights) fail the upload, never the previous rows."""
    catalog = tmp_path / "catalog"
    catalog.mkdir()
    good = _good_release(tmp_path, FF)
    _write_entry(catalog, good, FF)
    import_neurons(load_entry(catalog, NAME), clickhouse, database, metadata_store)
    import_synapses(load_entry(catalog, NAME), clickhouse, database, metadata_store)
    before = _snapshot(clickhouse, database, metadata_store)

    bad = tmp_path / "bad.feather"
    _feather(bad, {**_good_weights_columns(), "weight": pa.array([1.0, 2.5, 3.0, 4.0, 5.0])})
    _write_entry(catalog, {**good, "weights": str(bad)}, FF)
    with pytest.raises(SourceError, match="fractional") as caught:
        import_synapses(load_entry(catalog, NAME), clickhouse, database, metadata_store)
    assert caught.value.location == str(bad)

    after = _snapshot(clickhouse, database, metadata_store)
    assert after["neurons"] == before["neurons"] and after["synapses"] == before["synapses"]
    assert after["neurons_state"] == before["neurons_state"]
    state = after["synapses_state"]
    assert state.upload_state == "failed"
    assert (state.row_count, state.uploaded_at) == (before["synapses_state"].row_count, before["synapses_state"].uploaded_at)
    assert "fractional" in state.error_message and str(bad) in state.error_message


@pytest.mark.parametrize("case", CATALOG_CASES, ids=[c.id for c in CATALOG_CASES])
def test_bad_catalog_entry_is_a_clear_error(case: Case, tmp_path):
    catalog = tmp_path / "catalog"
    catalog.mkdir()
    good = _good_release(tmp_path, case.model)
    _write_entry(catalog, good, case.model)
    load_entry(catalog, NAME).source_model()  # the good entry is accepted

    setup = case.make(tmp_path, catalog, good)
    with pytest.raises(CatalogError) as caught:
        load_entry(catalog, setup.name).source_model()
    error = caught.value
    assert isinstance(error, SourceError)
    assert error.location == setup.location
    assert str(error) == f"{setup.location}: {error.problem}"
    assert setup.problem in error.problem, str(error)
    assert "\n" not in str(error)
