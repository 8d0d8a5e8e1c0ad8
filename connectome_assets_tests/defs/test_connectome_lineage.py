"""The connectome lineage as Dagster runs it: assets, blocking checks, the CLI."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from connectome_assets.cli import DEFAULT_SELECTION, dagster_instance, main, materialize_dataset, register_dataset, run_dataset_selection
from connectome_assets.metadata.store import MetadataStore
from connectome_assets.settings import Settings
from connectome_assets.warehouse.client import connect
from connectome_assets_tests.expected import MAIN_JOB_CHECKS
from connectome_assets_tests.releases import entry, write_release

REPO = Path(__file__).resolve().parents[2]
BODIES = [10, 20, 30, 40]
# (pre, post, weight): 99 and 77 are not annotated.
EDGES = [(10, 20, 3), (20, 30, 1), (30, 10, 2), (40, 40, 5), (10, 99, 7), (99, 20, 1), (77, 99, 4)]


def checks_of(result: dg.ExecuteInProcessResult) -> dict[str, bool]:
    return {f"{e.asset_key.to_user_string()}/{e.check_name}": e.passed for e in result.get_asset_check_evaluations()}


def started_steps(result: dg.ExecuteInProcessResult) -> set[str]:
    return {e.step_key for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_START}


def materialized(result: dg.ExecuteInProcessResult) -> set[str]:
    return {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}


def test_definitions_load_with_dg_check_defs() -> None:
    dg_cli = Path(sys.executable).parent / "dg"
    done = subprocess.run([str(dg_cli), "check", "defs"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "All definitions loaded successfully" in done.stdout + done.stderr


def test_dataset_lineage_materializes_with_every_check_passing(settings: Settings, tmp_path: Path) -> None:
    register_dataset(settings, entry("toy", write_release(tmp_path / "release", BODIES, EDGES)))
    report = materialize_dataset(settings, "toy")
    assert report.ok, report
    assert set(report.materialized) == {"neurons", "synapses", "graph_edges", "bottleneck_neurons", "feature_exports", "registry_entries"}
    registered = report.materialized["registry_entries"]["registered"]
    assert registered == {"toy.neurons": 1, "toy.synapses": 1, "toy.precomputed_analysis_status": 1, "toy.precomputed_bottleneck_neurons": 1}
    synapses = report.materialized["synapses"]
    assert (synapses["rows_read"], synapses["rows_written"]) == (7, 4)
    assert (synapses["dropped_pre_missing"], synapses["dropped_post_missing"], synapses["dropped_both_missing"]) == (1, 1, 1)
    assert sorted(synapses["sample_unannotated_ids"]) == [77, 99]
    assert {(a, c) for a, c, passed, _ in report.checks if passed} == set(MAIN_JOB_CHECKS)
    bottlenecks = report.materialized["bottleneck_neurons"]
    # The triangle 10-20-30; 40 only connects to itself, so it is a vertex but not a row.
    assert (bottlenecks["rows_written"], bottlenecks["articulation_points"], bottlenecks["status"]) == (3, 0, "ok")
    edges = report.materialized["graph_edges"]
    assert (edges["edges"], edges["self_loops"], edges["total_weight"]) == (4, 1, 11)
    # No placeholder neurons: the warehouse holds exactly the annotated bodies.
    client = connect(settings.clickhouse_url)
    ids = client.query(f"SELECT neuron_id FROM {settings.clickhouse_database}.neurons ORDER BY neuron_id").result_rows
    assert [r[0] for r in ids] == BODIES


def test_failing_endpoint_check_stops_downstream_in_the_same_run(settings: Settings, tmp_path: Path) -> None:
    """A new annotation release drops body 30, but synapses are not re-imported with it."""
    release = write_release(tmp_path / "v1", BODIES, EDGES)
    register_dataset(settings, entry("toy", release))
    assert materialize_dataset(settings, "toy").ok
    register_dataset(settings, entry("toy", {**release, "annotations": write_release(tmp_path / "v2", [10, 20, 40], [])["annotations"]}))

    result = run_dataset_selection(
        settings, "toy", dg.AssetSelection.assets("neurons", "graph_edges", "bottleneck_neurons") | dg.AssetSelection.checks_for_assets("synapses")
    )
    checks = checks_of(result)
    assert checks["synapses/endpoint_integrity"] is False
    assert "neurons" in materialized(result)
    assert "graph_edges" not in materialized(result)
    assert not {"graph_edges", "bottleneck_neurons"} & started_steps(result)
    assert "neurons" in started_steps(result)
    assert not result.success


def test_failing_neuron_state_check_stops_synapses(settings: Settings, tmp_path: Path) -> None:
    """Rows deleted behind the platform's back: the state no longer describes the whole table."""
    register_dataset(settings, entry("toy", write_release(tmp_path / "r", BODIES, EDGES)))
    assert materialize_dataset(settings, "toy").ok
    store = MetadataStore(settings.metadata_url)
    dataset = store.dataset_id("toy")
    connect(settings.clickhouse_url).command(
        f"ALTER TABLE {settings.clickhouse_database}.neurons DELETE WHERE dataset_id = '{dataset}' AND neuron_id = 40 SETTINGS mutations_sync = 2"
    )
    result = run_dataset_selection(settings, "toy", dg.AssetSelection.checks_for_assets("neurons") | dg.AssetSelection.assets("synapses", "graph_edges"))
    assert checks_of(result)["neurons/table_state_consistent"] is False
    assert materialized(result) == set()
    assert not {"synapses", "graph_edges"} & started_steps(result)
    assert store.table_state(dataset, "synapses").row_count == 4  # untouched


def test_cli_add_and_materialize_exit_codes(settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    env = {
        "CONNECTOME_HOME": str(settings.home),
        "CONNECTOME_CLICKHOUSE_URL": settings.clickhouse_url,
        "CONNECTOME_CLICKHOUSE_DATABASE": settings.clickhouse_database,
        "CONNECTOME_METADATA_URL": settings.metadata_url,
        "DAGSTER_HOME": str(settings.dagster_home),
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    release = write_release(tmp_path / "r", BODIES, EDGES)
    assert main(["dataset", "add", "toy", "--model", "flyem_feather", "--source", f"annotations={release['annotations']}", "--source", f"weights={release['weights']}"]) == 0
    assert (settings.catalog / "toy.yaml").is_file()
    assert main(["materialize", "toy"]) == 0
    out, err = capsys.readouterr()
    assert "dataset toy: OK" in out and "check synapses/endpoint_integrity: passed" in out
    assert "toy synapses: done, 1 batches, 7 rows in" in err  # the progress lines, not Dagster's events
    assert "STEP_START" not in err

    assert main(["materialize", "nope"]) == 2
    assert "unknown dataset 'nope'" in capsys.readouterr().err

    Path(release["weights"]).write_bytes(b"not arrow")
    assert main(["materialize", "toy", "--select", DEFAULT_SELECTION]) == 1
    out = capsys.readouterr().out
    assert "FAILED" in out and "connectome-weights-test.feather: is truncated or not a Feather" in out


def test_run_log_has_the_progress_lines_and_metadata_the_finish_figures(settings: Settings, tmp_path: Path) -> None:
    register_dataset(settings, entry("toy", write_release(tmp_path / "release", BODIES, EDGES)))
    result = run_dataset_selection(settings, "toy", dg.AssetSelection.from_string(DEFAULT_SELECTION))
    assert result.success
    logged = [e.user_message for e in dagster_instance(settings).all_logs(result.run_id) if not e.is_dagster_event]
    for pattern in (
        r"toy neurons: done, 1 batches, 4 rows in \d+ s, \S+ rows/s",
        r"toy synapses: done, 1 batches, 7 rows in \d+ s, \S+ rows/s",  # source rows read, before the filter
        r"vw_graph_edges read: done, \d+ blocks, 4 edges in \d+ s, \S+ edges/s",
        r"toy exports: done, 4/4 tables, 12 rows in \d+ s, \S+ rows/s",  # 4 neurons, 4 synapses, 3 bottleneck rows, 1 status row
    ):
        assert any(re.fullmatch(pattern, message) for message in logged), (pattern, logged)
    metadata = {e.asset_key.to_user_string(): e.materialization.metadata for e in result.get_asset_materialization_events()}
    for asset in ("neurons", "synapses", "feature_exports"):
        assert metadata[asset]["seconds"].value > 0 and metadata[asset]["rows_per_second"].value > 0, asset
    assert metadata["synapses"]["batches"].value == 1
    assert metadata["feature_exports"]["tables"].value == 4
    assert metadata["bottleneck_neurons"]["read"].value["edges"] == 4
