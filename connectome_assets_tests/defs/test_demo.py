"""`make demo`'s path on the real C. elegans data, checked against counts computed from cect directly."""

from __future__ import annotations

import json
from importlib import resources

import numpy as np

from connectome_assets.cli import materialize_dataset
from connectome_assets.connectome.sources.cect import cect_cell_name
from connectome_assets.demo import DEMO_DATASETS, run_demo
from connectome_assets.metadata.store import MetadataStore
from connectome_assets.settings import Settings
from connectome_assets.warehouse.client import connect


def expected_counts(reader: str) -> tuple[int, int]:
    """(connection rows in the source, rows whose both endpoints are neurons) straight from the JSON."""
    from cect.Cells import is_any_neuron

    data = json.loads((resources.files("cect") / "cache" / f"{reader}.json").read_text())
    neuron = np.array([is_any_neuron(cect_cell_name(n)) for n in data["nodes"]])
    read = kept = 0
    for matrix in data["connections"].values():
        pre, post = np.nonzero(np.asarray(matrix))
        read += len(pre)
        kept += int((neuron[pre] & neuron[post]).sum())
    return read, kept


def test_demo_imports_real_connectomes_dropping_only_non_neuron_endpoints(settings: Settings, capsys) -> None:
    assert run_demo(settings) == 0
    out = capsys.readouterr().out
    store = MetadataStore(settings.metadata_url)
    client = connect(settings.clickhouse_url)
    for name, (reader, _) in DEMO_DATASETS.items():
        read, kept = expected_counts(reader)
        assert f"dataset {name}: OK" in out
        dataset = store.dataset_id(name)
        rows = client.command(f"SELECT count() FROM {settings.clickhouse_database}.synapses WHERE dataset_id = '{dataset}'")
        assert rows == kept and store.table_state(dataset, "synapses").row_count == kept
        assert f"connections read  {read:>12,}" in out and f"written           {kept:>12,}" in out
    # A second run of the same release replaces, never duplicates.
    assert materialize_dataset(settings, "witvliet2021-adult").ok
    dataset = store.dataset_id("witvliet2021-adult")
    assert client.command(f"SELECT count() FROM {settings.clickhouse_database}.synapses WHERE dataset_id = '{dataset}'") == expected_counts("WitvlietDataReader8")[1]
