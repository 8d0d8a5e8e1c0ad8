"""Real parts for the suite: chDB, a throwaway PostgreSQL cluster, fake-gcs-server.

chDB binds a process to one data path for life, so each pytest process (xdist worker) has one
embedded ClickHouse and every test gets its own database in it.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from connectome_assets.settings import Settings, load_settings
from connectome_assets.warehouse.client import connect

warnings.filterwarnings("ignore", message=".*is currently in preview.*")
warnings.filterwarnings("ignore", message=".*is currently in beta.*")

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
# Files a person looks at after a run (the UI test's screenshots); gitignored.
TEST_ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
_SESSION_STARTED = pytest.StashKey[float]()


def pytest_sessionstart(session: pytest.Session) -> None:
    session.config.stash[_SESSION_STARTED] = time.time()


def pytest_terminal_summary(terminalreporter, config: pytest.Config) -> None:
    """Name the artifacts this session wrote (xdist workers' output is not shown, this summary is)."""
    started = config.stash.get(_SESSION_STARTED, time.time())
    written = sorted(p for p in TEST_ARTIFACTS.rglob("*") if p.is_file() and p.stat().st_mtime >= started) if TEST_ARTIFACTS.is_dir() else []
    for path in written:
        terminalreporter.write_line(f"test artifact: {path}")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Reference data beside the repo; missing data fails loudly (never a silent skip)."""
    if not SHARED_DATA.is_dir():
        pytest.fail(f"reference data not found at {SHARED_DATA}: the tests need ../shared/data beside the repository")
    return SHARED_DATA


@pytest.fixture(scope="session")
def chdb_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    return f"chdb://{tmp_path_factory.mktemp('clickhouse')}"


@pytest.fixture
def database(chdb_url: str) -> Iterator[str]:
    name = f"t_{uuid.uuid4().hex[:12]}"
    yield name
    connect(chdb_url).command(f"DROP DATABASE IF EXISTS {name}")


@pytest.fixture
def clickhouse(chdb_url: str, database: str):
    client = connect(chdb_url)
    from connectome_assets.warehouse.schema import ensure_schema

    ensure_schema(client, database)
    return client


# PostgreSQL ------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pg_bin() -> Path:
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if not candidates:
        pytest.fail("PostgreSQL server binaries not found under /usr/lib/postgresql: run `make test`, which installs them")
    return candidates[-1].parent


def _as_postgres_user(args: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *args] if os.geteuid() == 0 else args


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """A throwaway cluster on 127.0.0.1 (trust auth, fsync off); yields its base URL."""
    bindir = _pg_bin()
    root = Path(tempfile.mkdtemp(prefix="connectome-pg-"))
    data, port = root / "data", _free_port()
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    subprocess.run(_as_postgres_user([str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8"]), check=True, capture_output=True)
    options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off"
    subprocess.run(_as_postgres_user([str(bindir / "pg_ctl"), "-D", str(data), "-w", "-l", str(root / "log"), "-o", options, "start"]), check=True, capture_output=True)
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}"
    finally:
        subprocess.run(_as_postgres_user([str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "stop"]), capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def postgres_url(postgres_server: str) -> Iterator[str]:
    """A fresh database on the throwaway cluster."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(f"{postgres_server}/postgres", autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    yield f"{postgres_server}/{name}"
    with psycopg.connect(f"{postgres_server}/postgres", autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture(params=["sqlite", "postgresql"])
def metadata_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Every metadata test runs on SQLite and on PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'metadata.sqlite'}"
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def metadata_store(metadata_url: str):
    from connectome_assets.metadata.store import MetadataStore

    store = MetadataStore(metadata_url)
    store.migrate()
    yield store
    store.dispose()


# Object storage --------------------------------------------------------------------------
@pytest.fixture(scope="session")
def fake_gcs() -> Iterator[str]:
    """fake-gcs-server on 127.0.0.1; google-cloud-storage and pyarrow find it via STORAGE_EMULATOR_HOST."""
    from connectome_assets_tests.fake_gcs import FakeGcs

    server = FakeGcs()
    os.environ["STORAGE_EMULATOR_HOST"] = server.url
    try:
        yield server.url
    finally:
        os.environ.pop("STORAGE_EMULATOR_HOST", None)
        server.stop()


@pytest.fixture
def gcs_bucket(fake_gcs: str):
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    client = storage.Client(project="test", credentials=AnonymousCredentials())
    return client.create_bucket(f"b-{uuid.uuid4().hex[:10]}")


# Settings --------------------------------------------------------------------------------
@pytest.fixture
def settings(tmp_path: Path, chdb_url: str, database: str, metadata_url: str) -> Settings:
    base = load_settings({"CONNECTOME_HOME": str(tmp_path / "home")})
    return dataclasses.replace(base, clickhouse_url=chdb_url, clickhouse_database=database, metadata_url=metadata_url)
