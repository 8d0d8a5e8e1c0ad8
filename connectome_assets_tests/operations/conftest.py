"""One real `dagster dev` (webserver + daemon + code server) per test session, on 127.0.0.1.

Its home is a fresh project home; the tests that use it share it (distinct dataset names) and
run on one xdist worker (`xdist_group("dagster_dev")`, `--dist loadgroup`).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from connectome_assets.orchestration import DagsterWebserver
from connectome_assets.settings import Settings, load_settings

REPO = Path(__file__).resolve().parents[2]
# Runs of this instance hold the embedded ClickHouse path for their whole process when they use
# the in-process executor: one run at a time.
MAX_CONCURRENT_RUNS = 1
AUTOMATION = ("connectome_automation", "dataset_catalog_sensor", "flight_upload_sensor", "dvid_export_sensor")


@dataclass
class DagsterDev:
    webserver: DagsterWebserver
    settings: Settings
    env: dict[str, str]
    log: Path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _instance_config(dagster_home: Path) -> None:
    config = yaml.safe_load((REPO / "dagster.yaml").read_text())
    config["concurrency"]["runs"]["max_concurrent_runs"] = MAX_CONCURRENT_RUNS
    dagster_home.mkdir(parents=True, exist_ok=True)
    (dagster_home / "dagster.yaml").write_text(yaml.safe_dump(config))


@pytest.fixture(scope="session")
def dagster_dev(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DagsterDev]:
    home = tmp_path_factory.mktemp("dagster-dev") / "home"
    # The tests launch their work by hand; automation would launch the same work beside it, so
    # this deployment starts with its sensors stopped (as an operator's CONNECTOME_AUTOMATION=off).
    env = {**os.environ, "CONNECTOME_HOME": str(home), "DAGSTER_HOME": str(home / "dagster"), "CONNECTOME_AUTOMATION": "off"}
    env.pop("CONNECTOME_DAGSTER_URL", None)
    settings = load_settings(env)
    _instance_config(settings.dagster_home)
    port = _free_port()
    log = home / "dagster-dev.log"
    bin_dir = Path(sys.executable).parent
    command = ["env", "--default-signal=INT,TERM", str(bin_dir / "dagster"), "dev", "-h", "127.0.0.1", "-p", str(port), "-w", str(REPO / "workspace.yaml")]
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    with log.open("w") as out:
        process = subprocess.Popen(command, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    webserver = DagsterWebserver(f"http://127.0.0.1:{port}")
    try:
        deadline = time.monotonic() + 300  # a loaded 2-core machine; the normal start is ~20 s
        while True:
            if process.poll() is not None:
                pytest.fail(f"dagster dev exited with {process.returncode}:\n{log.read_text()[-3000:]}")
            try:
                if webserver.code_location_loaded():
                    break
            except Exception:  # not listening yet
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"dagster dev did not load the code location in 300 s:\n{log.read_text()[-3000:]}")
            time.sleep(1)
        assert webserver.sensors() == dict.fromkeys(AUTOMATION, "STOPPED")
        webserver.query("mutation { setNuxSeen }")  # else a welcome modal covers the UI's pages
        yield DagsterDev(webserver, settings, env, log)
    finally:
        webserver.close()
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        shutil.rmtree(home / "clickhouse", ignore_errors=True)
