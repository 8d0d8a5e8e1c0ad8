"""Graph products as Dagster runs them: a re-import makes them stale and the blocking check says so."""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from connectome_assets.cli import materialize_dataset, register_dataset, run_dataset_selection
from connectome_assets.metadata.store import MetadataStore
from connectome_assets.settings import Settings
from connectome_assets.warehouse.client import connect
from connectome_assets_tests.defs.test_connectome_lineage import checks_of, materialized
from connectome_assets_tests.releases import entry, write_release

# A path 1-2-3-4 plus a pendant 5 on 3: 2 and 3 are articulation points.
BODIES = [1, 2, 3, 4, 5]
EDGES = [(1, 2, 2), (2, 3, 1), (3, 4, 5), (5, 3, 1)]


def test_reimport_makes_the_product_stale_until_it_is_recomputed(settings: Settings, tmp_path: Path) -> None:
    register_dataset(settings, entry("toy", write_release(tmp_path / "r", BODIES, EDGES)))
    report = materialize_dataset(settings, "toy")
    assert report.ok, report
    assert report.materialized["bottleneck_neurons"]["articulation_points"] == 2

    assert run_dataset_selection(settings, "toy", dg.AssetSelection.assets("synapses")).success
    result = run_dataset_selection(settings, "toy", dg.AssetSelection.checks_for_assets("bottleneck_neurons"))
    assert checks_of(result)["bottleneck_neurons/graph_products_present"] is False
    evaluation = next(e for e in result.get_asset_check_evaluations() if e.check_name == "graph_products_present")
    assert "stale" in evaluation.description

    assert materialize_dataset(settings, "toy", "key:bottleneck_neurons").ok


def test_rows_deleted_behind_the_platforms_back_fail_the_check(settings: Settings, tmp_path: Path) -> None:
    register_dataset(settings, entry("toy", write_release(tmp_path / "r", BODIES, EDGES)))
    assert materialize_dataset(settings, "toy").ok
    dataset = MetadataStore(settings.metadata_url).dataset_id("toy")
    connect(settings.clickhouse_url).command(
        f"ALTER TABLE {settings.clickhouse_database}.precomputed_bottleneck_neurons DELETE WHERE dataset_id = '{dataset}' SETTINGS mutations_sync = 2"
    )
    result = run_dataset_selection(settings, "toy", dg.AssetSelection.checks_for_assets("bottleneck_neurons"))
    assert checks_of(result)["bottleneck_neurons/graph_products_present"] is False
    assert materialized(result) == set()
