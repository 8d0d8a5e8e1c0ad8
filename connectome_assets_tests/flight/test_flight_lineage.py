"""A Flight upload reaches Dagster: the Flight upload sensor observes it, automation records the
uploaded tables as materializations of `neurons`/`synapses` (with the filter's counts) and builds
everything below them behind their blocking checks. The server is the real one, in a thread; the
sensors and automation are ticked by hand (`Daemon`) and the requested runs executed in-process."""

from __future__ import annotations

import numpy as np
import pytest

from connectome_assets.cli import dataset_status, materialize_dataset
from connectome_assets.defs.connectome.lineage import DATASET_IMPORT_ASSETS
from connectome_assets_tests.daemon import Daemon, run_requested
from connectome_assets_tests.expected import MAIN_JOB_CHECKS
from connectome_assets_tests.flight.helpers import ClientFailed, FlightEnv, failing_after, neurons, synapses

WHOLE_LINEAGE = {*DATASET_IMPORT_ASSETS, *(f"{asset}/{check}" for asset, check in MAIN_JOB_CHECKS)}


def materialized(result) -> dict[str, dict]:
    """Asset -> the metadata of its materialization in a run."""
    return {event.asset_key.to_user_string(): {k: v.value for k, v in event.step_materialization_data.materialization.metadata.items()}
            for event in result.get_asset_materialization_events()}


@pytest.mark.slow
@pytest.mark.parametrize("metadata_url", ["sqlite"], indirect=True)
def test_flight_uploads_are_recorded_and_build_the_lineage_through_automation(env: FlightEnv, capsys: pytest.CaptureFixture[str]) -> None:
    daemon = Daemon(env.settings)
    assert daemon.automation_tick() == {}  # a condition's first evaluation requests nothing
    env.add_dataset("fl")
    daemon.catalog_tick()
    first = daemon.automation_tick()
    assert first == {name: {"fl"} for name in WHOLE_LINEAGE}
    # Nothing has been uploaded: the run records nothing and builds nothing below.
    assert materialized(run_requested(daemon, first, "fl")) == {}
    assert daemon.automation_tick() == {}
    daemon.flight_tick()  # its first look observes the version the catalog sensor observed: no change
    assert daemon.automation_tick() == {}

    ids = np.arange(1, 41, dtype=np.uint64) * 10
    pre = np.array([10, 20, 30, 999, 40, 20, 998], np.uint64)  # 999, 998 and 997 are not annotated
    post = np.array([20, 30, 10, 10, 997, 10, 997], np.uint64)
    env.upload("fl", "neurons", neurons(ids))
    sent = env.upload("fl", "synapses", synapses(pre, post, np.arange(1, 8)))
    assert (sent.rows_accepted, sent.rows_dropped) == (4, 3)

    observed = daemon.flight_tick()
    assert [event.partition for event in observed.asset_events] == ["fl"]
    requested = daemon.automation_tick()
    assert requested == {name: {"fl"} for name in WHOLE_LINEAGE}
    run = run_requested(daemon, requested, "fl")
    assert set(materialized(run)) == set(DATASET_IMPORT_ASSETS)
    assert all(evaluation.passed for evaluation in run.get_asset_check_evaluations())
    assert len(run.get_asset_check_evaluations()) == len(MAIN_JOB_CHECKS)
    recorded = materialized(run)["synapses"]
    assert recorded["source_model"] == "flight"
    assert (recorded["rows_written"], recorded["rows_read"], recorded["rows_dropped"]) == (4, 7, 3)
    assert (recorded["dropped_pre_missing"], recorded["dropped_post_missing"], recorded["dropped_both_missing"]) == (1, 1, 1)
    assert sorted(recorded["sample_unannotated_ids"]) == [997, 998, 999]
    assert materialized(run)["neurons"]["rows_written"] == 40
    assert materialized(run)["graph_edges"]["edges"] == 4  # the kept rows: 10->20, 20->30, 30->10, 20->10
    capsys.readouterr()
    dataset_status(env.settings, "fl")
    assert "    read 7 rows, dropped 3 (1 pre missing, 1 post missing, 1 both missing)" in capsys.readouterr().out.splitlines()

    # Seen once: no new observation, nothing requested again.
    assert daemon.flight_tick().asset_events == []
    assert daemon.automation_tick() == {}

    # A client whose source breaks: the upload fails, the previous rows stay, nothing is requested;
    # materializing by hand says what happened in one sentence.
    with pytest.raises(ClientFailed):
        table = synapses(pre, post, np.arange(1, 8))
        env.upload("fl", "synapses", failing_after(table, 1, 3), schema=table.schema, batch_rows=3)
    assert env.settled_state("fl", "synapses").upload_state == "failed"
    assert daemon.flight_tick().asset_events == []
    assert daemon.automation_tick() == {}
    report = materialize_dataset(env.settings, "fl", "key:synapses")
    assert not report.success
    [failure] = report.failures
    assert failure.startswith("synapses: dataset 'fl': the last Flight upload of synapses failed (IncompleteStreamError: ")
    assert "the warehouse keeps the 4 rows uploaded at " in failure and failure.endswith("send the table again with `connectome flight upload`")
