"""The `purge_dataset` op job and `connectome purge`: thin layers over warehouse/purge.py."""

from __future__ import annotations

import dagster as dg
import pytest

from connectome_assets.cli import main
from connectome_assets.definitions import build_definitions
from connectome_assets.metadata.store import MetadataStore
from connectome_assets.settings import Settings
from connectome_assets.warehouse.client import connect
from connectome_assets.warehouse.schema import ensure_schema
from connectome_assets_tests.warehouse.test_purge import DATASET_TABLES, ROWS_A, ROWS_B, build_two_datasets, dataset_counts, untouched_snapshot


@pytest.fixture
def scenario(settings: Settings):
    client = connect(settings.clickhouse_url)
    ensure_schema(client, settings.clickhouse_database)
    store = MetadataStore(settings.metadata_url)
    store.migrate()
    yield client, store, build_two_datasets(client, settings.clickhouse_database, store)
    store.dispose()


def run_purge_job(settings: Settings, **config) -> dg.ExecuteInProcessResult:
    job = build_definitions(settings).resolve_job_def("purge_dataset")
    return job.execute_in_process(
        run_config={"ops": {"purge_dataset_rows": {"config": config}}}, instance=dg.DagsterInstance.ephemeral(), raise_on_error=False
    )


def output_metadata(result: dg.ExecuteInProcessResult) -> dict[str, object]:
    [event] = [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_OUTPUT]
    return {k: v.value for k, v in event.step_output_data.metadata.items()}


def test_purge_job_dry_run_then_purge(settings: Settings, scenario) -> None:
    client, store, ds = scenario
    db = settings.clickhouse_database
    kept = untouched_snapshot(client, db, ds.b)

    dry = run_purge_job(settings, dataset="a", dry_run=True)
    assert dry.success
    assert dry.output_for_node("purge_dataset_rows")["rows"] == ROWS_A
    meta = output_metadata(dry)
    assert (meta["rows_to_delete"], meta["rows_deleted"], meta["tables"], meta["state_reset"]) == (22, 0, ROWS_A, [])
    assert dataset_counts(client, db, ds.a) == ROWS_A

    done = run_purge_job(settings, dataset="a")
    assert done.success
    meta = output_metadata(done)
    assert (meta["rows_deleted"], meta["tables"]) == (22, ROWS_A)
    assert meta["state_reset"] == ["mv_neuron_types", "neurons", "precomputed_bottleneck_neurons", "synapses"]
    assert dataset_counts(client, db, ds.a) == dict.fromkeys(DATASET_TABLES, 0)
    assert dataset_counts(client, db, ds.b) == ROWS_B
    assert untouched_snapshot(client, db, ds.b) == kept
    assert store.table_state(ds.a, "neurons").upload_state == "pending"
    assert store.table_state(ds.b, "neurons").upload_state == "uploaded"


def test_purge_job_refuses_unknown_dataset_and_global_tables(settings: Settings, scenario) -> None:
    client, _store, ds = scenario
    unknown = run_purge_job(settings, dataset="nope")
    assert not unknown.success
    [failure] = [e for e in unknown.all_events if e.is_step_failure]
    assert "dataset 'nope' is not registered" in failure.step_failure_data.user_failure_data.description

    global_table = run_purge_job(settings, dataset="a", tables=["synapses", "mv_global"])
    assert not global_table.success
    assert dataset_counts(client, settings.clickhouse_database, ds.a) == ROWS_A


def test_cli_purge(settings: Settings, scenario, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    client, store, ds = scenario
    db = settings.clickhouse_database
    for key, value in {
        "CONNECTOME_HOME": str(settings.home),
        "CONNECTOME_CLICKHOUSE_URL": settings.clickhouse_url,
        "CONNECTOME_CLICKHOUSE_DATABASE": db,
        "CONNECTOME_METADATA_URL": settings.metadata_url,
        "DAGSTER_HOME": str(settings.dagster_home),
    }.items():
        monkeypatch.setenv(key, value)
    kept = untouched_snapshot(client, db, ds.b)

    assert main(["purge", "a", "--dry-run"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"dataset a ({ds.a}): dry run, would delete 22 rows from {db}"
    assert [line.split() for line in lines[1:]] == [[table, str(rows)] for table, rows in ROWS_A.items()]
    assert dataset_counts(client, db, ds.a) == ROWS_A

    assert main(["purge", "a", "--tables", "synapses"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"dataset a ({ds.a}): deleted 4 rows from {db}"
    assert lines[1].split() == ["synapses", "4"]
    assert lines[2] == "  upload state reset to pending: synapses"
    assert dataset_counts(client, db, ds.a) == {**ROWS_A, "synapses": 0}
    assert store.table_state(ds.a, "neurons").upload_state == "uploaded"

    assert main(["purge", "nope"]) == 2
    assert capsys.readouterr().err == "connectome: dataset 'nope' is not registered in the metadata database\n"
    assert main(["purge", "a", "--tables", "neurons", "mv_global"]) == 2
    assert "mv_global is not a dataset table" in capsys.readouterr().err
    assert dataset_counts(client, db, ds.a)["neurons"] == 3

    assert main(["purge", "a"]) == 0
    assert "deleted 18 rows" in capsys.readouterr().out
    assert dataset_counts(client, db, ds.a) == dict.fromkeys(DATASET_TABLES, 0)
    assert untouched_snapshot(client, db, ds.b) == kept
