"""A real upload process killed with SIGKILL mid-upload, then the next run (SQLite and PostgreSQL).

Each step is its own process: chDB holds one data path per process (a file lock the kernel
releases when the killed process dies), so the checking side opens the path only after the kill.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from connectome_assets.metadata.store import MetadataStore, UploadInProgressError
from connectome_assets_tests.warehouse.upload_process import DATASET, NEW_EDGES, SEED_EDGES

STEP = [sys.executable, "-m", "connectome_assets_tests.warehouse.upload_process"]
# Only a bound on a hang (a broken child), never a measured duration.
GIVE_UP_SECONDS = 300


def run_step(step: str, chdb_path: Path, metadata_url: str) -> dict:
    done = subprocess.run([*STEP, step, str(chdb_path), metadata_url], capture_output=True, text=True, env=os.environ.copy())
    assert done.returncode == 0, f"{step} failed:\n{done.stderr}"
    return json.loads(done.stdout.strip().splitlines()[-1])


def wait_for_file(path: Path, child: subprocess.Popen) -> None:
    deadline = time.monotonic() + GIVE_UP_SECONDS
    while not path.exists():
        if child.poll() is not None:
            pytest.fail(f"the stalling upload exited with {child.returncode} before staging a batch:\n{child.stderr.read()}")
        if time.monotonic() > deadline:
            child.kill()
            pytest.fail(f"the stalling upload never staged a batch in {GIVE_UP_SECONDS} s")
        time.sleep(0.05)


def test_sigkill_mid_upload_keeps_the_rows_and_the_next_run_completes(tmp_path: Path, metadata_url: str) -> None:
    chdb_path, ready = tmp_path / "clickhouse", tmp_path / "staged"
    seeded = run_step("seed", chdb_path, metadata_url)
    assert seeded["rows"] == [list(edge) for edge in SEED_EDGES] and seeded["state"]["upload_state"] == "uploaded"

    child = subprocess.Popen([*STEP, "stall", str(chdb_path), metadata_url, str(ready)], stderr=subprocess.PIPE, text=True, env=os.environ.copy())
    try:
        wait_for_file(ready, child)
        store = MetadataStore(metadata_url)
        dataset_id = store.dataset_id(DATASET)
        live = store.table_state(dataset_id, "synapses")
        # The owner is alive: the state truthfully says uploading, and a second upload is refused.
        assert live.upload_state == "uploading" and live.upload_owner.split(":")[1] == str(child.pid)
        with pytest.raises(UploadInProgressError, match=f"being uploaded by .*:{child.pid}:"):
            store.begin_upload(dataset_id, "synapses")
        child.send_signal(signal.SIGKILL)
        assert child.wait() == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
        child.stderr.close()

    # The operator's view, through the real entry point: it is the first reader after the kill.
    env = {**os.environ, "CONNECTOME_HOME": str(tmp_path / "home"), "CONNECTOME_METADATA_URL": metadata_url}
    status = subprocess.run([sys.executable, "-m", "connectome_assets.cli", "dataset", "status", DATASET], capture_output=True, text=True, env=env)
    assert status.returncode == 0, status.stderr
    [synapses_line, error_line] = [line for line in status.stdout.splitlines() if line.startswith("  ")]
    assert synapses_line.split()[:3] == ["synapses", "failed", str(len(SEED_EDGES))]
    assert error_line.startswith(f"    error: interrupted: upload {live.upload_id} by {live.upload_owner}") and "its process is gone" in error_line

    after_kill = run_step("inspect", chdb_path, metadata_url)
    assert after_kill["rows"] == [list(edge) for edge in SEED_EDGES]  # the previous rows, count and content
    assert len(after_kill["staging"]) == 1  # what the killed process staged is still there, unswapped
    state = after_kill["state"]
    assert state["upload_state"] == "failed"
    assert state["error_message"].startswith("interrupted:") and "its process is gone" in state["error_message"]
    assert (state["row_count"], state["uploaded_at"]) == (len(SEED_EDGES), seeded["state"]["uploaded_at"])

    rerun = run_step("upload", chdb_path, metadata_url)
    assert rerun["rows"] == [list(edge) for edge in NEW_EDGES]
    assert rerun["staging"] == []
    assert any(after_kill["staging"][0] in line for line in rerun["reports"])
    assert (rerun["state"]["upload_state"], rerun["state"]["row_count"], rerun["state"]["error_message"]) == ("uploaded", len(NEW_EDGES), None)
    store.dispose()


def test_the_next_upload_itself_recognises_a_killed_one(tmp_path: Path, metadata_url: str) -> None:
    """No reader looked at the state between the kill and the next upload: begin_upload settles it."""
    chdb_path, ready = tmp_path / "clickhouse", tmp_path / "staged"
    run_step("seed", chdb_path, metadata_url)
    child = subprocess.Popen([*STEP, "stall", str(chdb_path), metadata_url, str(ready)], stderr=subprocess.PIPE, text=True, env=os.environ.copy())
    try:
        wait_for_file(ready, child)
        child.send_signal(signal.SIGKILL)
        child.wait()
    finally:
        if child.poll() is None:
            child.kill()
        child.stderr.close()
    rerun = run_step("upload", chdb_path, metadata_url)
    assert any("interrupted:" in line and "its process is gone" in line and "takes over" in line for line in rerun["reports"])
    assert any("dropped 1 staging table" in line for line in rerun["reports"])
    assert (rerun["rows"], rerun["staging"], rerun["state"]["upload_state"]) == ([list(edge) for edge in NEW_EDGES], [], "uploaded")
