"""Registry load test: `connectome registry serve` under concurrent clients on 127.0.0.1, beside a bare FastAPI peer.

Set-up
------
A fresh home in a temp dir: `--tables` (default 200) small Parquet feature tables (2,000-5,000 rows;
every third one hive-partitioned into 2-4 files) under `$CONNECTOME_HOME/objects/features/…`, spread
over the datastacks manc, flywire and hemibrain with tags and some lineage, registered and published
in-process through the library. One token per simulated user (`--users`, default 100), each with read
on the three datastacks; client i sends as user i mod `--users`.

The metadata database is the default SQLite file under the home, an existing database
(`--metadata-url`, best a scratch one: tables and tokens are added to it), or a throwaway
PostgreSQL cluster started for the run (`--postgres`: initdb + pg_ctl from /usr/lib/postgresql/*/bin,
trust auth, fsync off, run as the postgres user when root; stopped and deleted at the end).

What is measured
----------------
The registry runs as a separate process (`connectome registry serve`, configured through the
environment only). For each scenario, `--clients` (default 100) closed-loop clients (each sends its next
request when the previous one answered) run for `--seconds` (default 30) from this process on one asyncio
(uvloop) loop, each client with its own keep-alive `httpx.AsyncClient` (`--shared-pool`: all on one pool, which
httpcore makes O(connections) per request), after one unrecorded warm-up second:

* search: `GET /v1/tables` with a mix of datastack / tag / status / text filters, limit 50.
* access: `POST /v1/tables/{name}/access` of a random table (signed URLs, quota upsert, audit row).
* peer: the same search requests against a trivial FastAPI app served by uvicorn in its own process,
  a sync route (like the registry's, so the threadpool hop is included) that returns the bytes of a
  real limit-50 search response: the framework + server ceiling on this machine.

Per scenario: requests, requests/s, p50 and p99 latency, errors (any non-2xx or exception; the first
few bodies are printed, and for the registry the exceptions in its log), the server's peak RSS
(process and children, sampled every 0.1 s) and CPU, the throwaway PostgreSQL's CPU, and this load
generator's CPU. On a small machine the load generator, the server and the database share the same
cores: requests/s is then a joint ceiling, not the server's alone (the CPU columns show who used them).
Exits non-zero if any scenario had errors.

Usage: python benchmarks/registry.py [--clients 100] [--seconds 30] [--tables 200] [--users 100]
                                     [--metadata-url postgresql://user@host:port/db | --postgres]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

import httpx
import numpy as np
import psutil
import pyarrow as pa
import pyarrow.parquet as pq

DATASTACKS = ("manc", "flywire", "hemibrain")
KINDS = {  # table kind -> (description, tags)
    "synapse_counts": ("Synapse counts per neuron pair", ("connectivity", "synapses")),
    "cell_types": ("Cell type labels per neuron", ("cell-types", "annotations")),
    "nt_predictions": ("Neurotransmitter predictions per neuron", ("ml", "neurotransmitters")),
    "soma_positions": ("Soma positions in nm", ("morphology", "annotations")),
    "proofreading": ("Proofreading status per segment", ("qc", "proofreading")),
    "skeleton_stats": ("Skeleton cable length and branch points", ("morphology", "ml")),
}
TAGS = sorted({tag for _, tags in KINDS.values() for tag in tags} | {"release", "nightly"})
WORDS = ("synapse", "cell", "predictions", "soma", "proofread", "skeleton", "nm", "per neuron", "v2")
REGIONS = ("left", "right", "center", "midline")
LABELS = np.array(["KC", "MBON", "DAN", "PN", "LN", "DNa01", "T4", "Mi1", "unknown"])
SEARCH_LIMIT = 50
WARMUP_SECONDS = 1.0
SAMPLE_SECONDS = 0.1
ERRORS_SHOWN = 5
REQUEST_TIMEOUT = 60.0
DAILY_QUOTA = 1 << 60  # bytes per user per day: never the limit in a load test
VENV_BIN = Path(sys.executable).parent

# The peer: run as `python -c PEER_SOURCE PORT PAYLOAD_FILE`, so nothing is written to the repository and it
# imports only FastAPI and uvicorn (its RSS is the framework's). uvicorn picks the same loop / parser as the registry.
PEER_SOURCE = """
import sys
import uvicorn
from fastapi import FastAPI, Response

body = open(sys.argv[2], "rb").read()
app = FastAPI()

@app.get("/healthz")
def healthz() -> dict:
    return {"status": "ok"}

@app.get("/v1/tables")
def search() -> Response:
    return Response(body, media_type="application/json")

uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="info", access_log=False)
"""


# set-up ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TableSpec:
    name: str
    datastack: str
    kind: str
    partitions: int  # 0: a single file


def table_specs(count: int, seed: int) -> list[TableSpec]:
    rng = random.Random(seed)
    kinds = list(KINDS)
    return [
        TableSpec(
            f"{DATASTACKS[i % 3]}_{kinds[(i // 3) % len(kinds)]}_{i:04d}",
            DATASTACKS[i % 3],
            kinds[(i // 3) % len(kinds)],
            rng.randint(2, 4) if i % 3 == 1 else 0,
        )
        for i in range(count)
    ]


def write_table(directory: Path, spec: TableSpec, rng: np.random.Generator) -> int:
    """The table's Parquet file(s) under `directory`; returns the number of files."""
    rows = int(rng.integers(2000, 5001))
    table = pa.table(
        {
            "root_id": rng.integers(720575940600000000, 720575940700000000, rows, dtype=np.int64),
            "x_nm": rng.uniform(0, 1e6, rows).astype(np.float32),
            "y_nm": rng.uniform(0, 1e6, rows).astype(np.float32),
            "z_nm": rng.uniform(0, 3e5, rows).astype(np.float32),
            "score": rng.random(rows),
            "label": LABELS[rng.integers(0, len(LABELS), rows)],
        }
    )
    if not spec.partitions:
        directory.mkdir(parents=True)
        pq.write_table(table, directory / "part-0.parquet")
        return 1
    region = rng.integers(0, spec.partitions, rows)
    for index in range(spec.partitions):
        part = directory / f"region={REGIONS[index]}"
        part.mkdir(parents=True)
        pq.write_table(table.filter(pa.array(region == index)), part / "part-0.parquet")
    return spec.partitions


def registration(spec: TableSpec, location: Path, index: int, specs: list[TableSpec]) -> dict:
    description, tags = KINDS[spec.kind]
    fields = {
        "name": spec.name,
        "location": f"file://{location}",
        "format": "parquet",
        "datastack": spec.datastack,
        "description": f"{description} for {spec.datastack}, batch {index} (v2 pipeline)",
        "tags": [*tags, "release" if index % 2 else "nightly"],
        "status": "published",
        "owner_team": f"{spec.datastack}-team",
        "materialization_version": str(700 + index % 5),
        "produced_by": f"bench-pipeline@{index % 7}",
    }
    if index % 5 == 4 and index >= 3:  # some lineage, so search documents carry derived_from
        fields["derived_from"] = [specs[index - 3].name]
    return fields


@dataclass
class Prepared:
    names: list[str]
    tokens: list[str]
    files: int
    bytes: int
    seconds: float


def prepare(env: dict[str, str], count: int, users: int, seed: int) -> Prepared:
    """Write the tables under the home, register and publish them, and create one read token per user (in-process)."""
    from connectome_assets.registry.config import in_process_client, registry_config
    from connectome_assets.settings import load_settings

    started = time.perf_counter()
    settings = load_settings(env)
    objects = Path(settings.object_store.removeprefix("file://"))
    specs, rng, files = table_specs(count, seed), np.random.default_rng(seed), 0
    client = in_process_client(settings.metadata_url, registry_config(settings), "bench-admin")
    try:
        for index, spec in enumerate(specs):
            location = objects / "features" / spec.datastack / spec.name
            files += write_table(location, spec, rng)
            client.register(registration(spec, location, index, specs))
        grants = [(datastack, "read") for datastack in DATASTACKS]
        tokens = [client.registry.create_token(f"bench-user-{i:03d}", grants) for i in range(users)]
    finally:
        client.close()
    size = sum(p.stat().st_size for p in objects.rglob("*.parquet"))
    return Prepared([s.name for s in specs], tokens, files, size, time.perf_counter() - started)


# processes ----------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _as_postgres_user(args: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *args] if os.geteuid() == 0 else args


@dataclass
class Postgres:
    url: str  # of the cluster, without a database
    data: Path
    version: str


@contextlib.contextmanager
def throwaway_postgres() -> Iterator[Postgres]:
    """A PostgreSQL cluster on 127.0.0.1 for this run (the recipe of the tests' `postgres_server`); stopped and deleted after."""
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if not candidates:
        raise SystemExit("--postgres: no PostgreSQL server binaries under /usr/lib/postgresql (`make postgres-binaries`)")
    bindir = candidates[-1].parent
    root = Path(tempfile.mkdtemp(prefix="registry-bench-pg-"))
    data, port = root / "data", free_port()
    try:
        if os.geteuid() == 0:
            shutil.chown(root, "postgres", "postgres")
        subprocess.run(
            _as_postgres_user([str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8"]),
            check=True,
            capture_output=True,
        )
        options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off"
        # Own session: a Ctrl-C on the terminal must not reach the postmaster before we stop it ourselves.
        subprocess.run(
            _as_postgres_user([str(bindir / "pg_ctl"), "-D", str(data), "-w", "-l", str(root / "log"), "-o", options, "start"]),
            check=True,
            capture_output=True,
            start_new_session=True,
        )
        try:
            yield Postgres(f"postgresql://postgres@127.0.0.1:{port}", data, bindir.parent.name)
        finally:
            subprocess.run(_as_postgres_user([str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "stop"]), check=False, capture_output=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def create_database(cluster_url: str, name: str) -> str:
    import psycopg

    with psycopg.connect(f"{cluster_url}/postgres", autocommit=True) as connection:
        connection.execute(f"CREATE DATABASE {name}")
    return f"{cluster_url}/{name}"


def postmaster_pid(data: Path) -> int:
    return int((data / "postmaster.pid").read_text().split()[0])


@contextlib.contextmanager
def server_process(args: list[str], env: dict[str, str], log: Path, port: int) -> Iterator[subprocess.Popen]:
    """A server started in its own session, ready on /healthz; terminated (killed if it lingers) however we leave."""
    with open(log, "wb") as output:
        process = subprocess.Popen(args, env=env, stdout=output, stderr=subprocess.STDOUT, cwd=Path(__file__).parent.parent, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"{args[0]} exited with {process.returncode} before answering /healthz:\n{log.read_text()[-3000:]}")
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{args[0]} did not answer /healthz within 60 s:\n{log.read_text()[-3000:]}")
            time.sleep(0.1)
        yield process
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _tree(pid: int) -> list[psutil.Process]:
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def tree_cpu_seconds(pid: int | None) -> float:
    """CPU seconds of a process tree so far, including children that already exited and were reaped
    (PostgreSQL backends come and go as the server's pool opens and closes connections)."""
    total = 0.0
    for process in _tree(pid) if pid else []:
        with contextlib.suppress(psutil.NoSuchProcess):
            times = process.cpu_times()
            total += times.user + times.system + times.children_user + times.children_system
    return total


class RssSampler:
    """Peak RSS of a process and its children, sampled on a thread (the event loop is busy with the load)."""

    def __init__(self, pid: int) -> None:
        self.pid, self.peak_mib = pid, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while True:
            rss = 0
            for process in _tree(self.pid):
                with contextlib.suppress(psutil.NoSuchProcess):
                    rss += process.memory_info().rss
            self.peak_mib = max(self.peak_mib, rss / (1 << 20))
            if self._stop.wait(SAMPLE_SECONDS):
                return

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()


# load -----------------------------------------------------------------------------------------
Request = Callable[[httpx.AsyncClient, random.Random, dict[str, str]], Awaitable[httpx.Response]]


def search_request(http: httpx.AsyncClient, rng: random.Random, headers: dict[str, str]) -> Awaitable[httpx.Response]:
    datastack, tag, word = rng.choice(DATASTACKS), rng.choice(TAGS), rng.choice(WORDS)
    params = rng.choice(
        [
            {},
            {"datastack": datastack},
            {"datastack": datastack, "tag": tag},
            {"tag": tag},
            {"q": word},
            {"datastack": datastack, "q": word},
            {"datastack": datastack, "status": "published"},
        ]
    )
    return http.get("/v1/tables", params={**params, "limit": SEARCH_LIMIT}, headers=headers)


def access_request(names: list[str]) -> Request:
    def request(http: httpx.AsyncClient, rng: random.Random, headers: dict[str, str]) -> Awaitable[httpx.Response]:
        return http.post(f"/v1/tables/{rng.choice(names)}/access", json={}, headers=headers)

    return request


@dataclass
class Tally:
    latencies: list[float] = field(default_factory=list)
    response_bytes: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)

    def error(self, kind: str, example: str) -> None:
        self.errors[kind] += 1
        if len(self.examples) < ERRORS_SHOWN:
            self.examples.append(example)


async def closed_loop(http: httpx.AsyncClient, request: Request, headers: dict[str, str], seed: int, until: float, tally: Tally) -> None:
    rng = random.Random(seed)
    while time.perf_counter() < until:
        started = time.perf_counter()
        try:
            response = await request(http, rng, headers)
        except Exception as exc:  # noqa: BLE001 - a timeout or a dropped connection is an error of the run, not of this script
            tally.error(type(exc).__name__, f"{type(exc).__name__}: {exc!r}")
            continue
        if 200 <= response.status_code < 300:
            tally.latencies.append(time.perf_counter() - started)
            tally.response_bytes += len(response.content)
        else:
            what = f"{response.status_code} {response.request.method} {response.request.url.path}"
            tally.error(str(response.status_code), f"{what}: {response.text[:400]}")


@dataclass
class ScenarioResult:
    name: str
    seconds: float
    tally: Tally
    server_rss_mib: float
    server_cpu: float  # seconds
    db_cpu: float | None
    loadgen_cpu: float

    @property
    def errors(self) -> int:
        return sum(self.tally.errors.values())


class CpuMeter:
    """CPU seconds of the server tree, the database tree and this process over the timed window only (not the warm-up)."""

    def __init__(self, server_pid: int, db_pid: int | None) -> None:
        self.server_pid, self.db_pid = server_pid, db_pid
        self.server = self.own = 0.0
        self.db: float | None = None
        self._marks = (0.0, 0.0, 0.0)

    def _read(self) -> tuple[float, float, float]:
        return tree_cpu_seconds(self.server_pid), tree_cpu_seconds(self.db_pid), time.process_time()

    def start(self) -> None:
        self._marks = self._read()

    def stop(self) -> None:
        server, db, own = (now - before for now, before in zip(self._read(), self._marks))
        self.server, self.db, self.own = server, db if self.db_pid else None, own


async def _load(base_url: str, request: Request, tokens: list[str], args: argparse.Namespace, cpu: CpuMeter, tally: Tally, warmup: Tally) -> float:
    clients = args.clients
    async with contextlib.AsyncExitStack() as stack:
        if args.shared_pool:
            limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
            shared = await stack.enter_async_context(httpx.AsyncClient(base_url=base_url, limits=limits, timeout=REQUEST_TIMEOUT))
            pools = [shared] * clients
        else:
            # One keep-alive connection per client: httpcore's pool rescans all its connections (a getpeername syscall
            # each) on every request, so one shared pool of 100 made this load generator the bottleneck (see --shared-pool).
            one = httpx.Limits(max_connections=1, max_keepalive_connections=1)
            pools = [
                await stack.enter_async_context(httpx.AsyncClient(base_url=base_url, limits=one, timeout=REQUEST_TIMEOUT)) for _ in range(clients)
            ]
        headers = [{"Authorization": f"Bearer {tokens[i % len(tokens)]}"} for i in range(clients)]
        until = time.perf_counter() + WARMUP_SECONDS  # opens the connections and warms the server's caches
        await asyncio.gather(*(closed_loop(pools[i], request, headers[i], -1 - i, until, warmup) for i in range(clients)))
        cpu.start()
        started = time.perf_counter()
        await asyncio.gather(*(closed_loop(pools[i], request, headers[i], i, started + args.seconds, tally) for i in range(clients)))
        elapsed = time.perf_counter() - started  # the last requests end after the deadline: they count, so does their time
        cpu.stop()
        return elapsed


def run_scenario(
    name: str,
    base_url: str,
    request: Request,
    tokens: list[str],
    args: argparse.Namespace,
    server_pid: int,
    db_pid: int | None,
    run_async: Callable[[Awaitable[float]], float],
) -> ScenarioResult:
    tally, warmup, cpu = Tally(), Tally(), CpuMeter(server_pid, db_pid)
    with RssSampler(server_pid) as rss:
        seconds = run_async(_load(base_url, request, tokens, args, cpu, tally, warmup))
    tally.errors.update(warmup.errors)
    tally.examples = (warmup.examples + tally.examples)[:ERRORS_SHOWN]
    return ScenarioResult(name, seconds, tally, rss.peak_mib, cpu.server, cpu.db, cpu.own)


# report ---------------------------------------------------------------------------------------
def print_table(results: list[ScenarioResult]) -> None:
    print(
        f"\n{'scenario':<16} {'requests':>9} {'requests/s':>11} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7} {'server peak RSS MiB':>20}"
        f" {'server CPU %':>13} {'db CPU %':>9} {'loadgen CPU %':>14}"
    )
    for r in results:
        lat = np.array(r.tally.latencies) * 1000
        p50, p99 = (f"{np.percentile(lat, q):.1f}" if len(lat) else "-" for q in (50, 99))
        db = f"{100 * r.db_cpu / r.seconds:.0f}" if r.db_cpu is not None else "-"
        print(
            f"{r.name:<16} {len(lat):>9,} {len(lat) / r.seconds:>11,.0f} {p50:>8} {p99:>8} {r.errors:>7,} {r.server_rss_mib:>20,.0f}"
            f" {100 * r.server_cpu / r.seconds:>13.0f} {db:>9} {100 * r.loadgen_cpu / r.seconds:>14.0f}"
        )
    print("(requests: answered 2xx; CPU % of one core over the timed window, so up to 100 x cores; db: the throwaway PostgreSQL only)")
    for r in results:
        if r.errors:
            print(f"\n{r.name}: {r.errors:,} errors by kind: {dict(r.tally.errors)}; first ones:")
            for example in r.tally.examples:
                print(f"  {example}")


def logged_exceptions(log: Path) -> Counter[str]:
    """The final line of every traceback in a server log (`module.Error: message`), counted."""
    found: Counter[str] = Counter()
    in_traceback = False
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith("Traceback (most recent call last)"):
            in_traceback = True
        elif in_traceback and line and not line.startswith(" "):
            in_traceback = False
            if not line.startswith(("The above exception", "During handling")):
                found[re.sub(r"\s+", " ", line)[:300]] += 1
    return found


def print_server_log(name: str, log: Path) -> None:
    exceptions = logged_exceptions(log)
    if exceptions:
        print(f"\n{name} server log: {sum(exceptions.values()):,} tracebacks ending in:")
        for line, count in exceptions.most_common(5):
            print(f"  {count:>6,} x {line}")


def masked(url: str) -> str:
    import sqlalchemy as sa

    return sa.engine.make_url(url).render_as_string(hide_password=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=100, help="concurrent closed-loop clients")
    parser.add_argument("--seconds", type=float, default=30.0, help="timed seconds per scenario")
    parser.add_argument("--tables", type=int, default=200)
    parser.add_argument("--users", type=int, default=100, help="simulated users, one token each")
    parser.add_argument("--seed", type=int, default=20261121)
    parser.add_argument("--workers", type=int, default=1, help="registry server processes (`connectome registry serve --workers`)")
    parser.add_argument("--shared-pool", action="store_true", help="all clients on one httpx pool (slower load generator; see _load)")
    database = parser.add_mutually_exclusive_group()
    database.add_argument("--metadata-url", help="an existing (scratch) metadata database instead of SQLite under the temp home")
    database.add_argument("--postgres", action="store_true", help="start a throwaway PostgreSQL cluster for the run")
    args = parser.parse_args()
    if args.tables < 3 or args.clients < 1 or args.users < 1:
        parser.error("--tables >= 3, --clients >= 1 and --users >= 1")

    # SIGTERM ends the run through the same clean-up as Ctrl-C: no server or cluster is left behind.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if importlib.util.find_spec("sniffio") is None:
        # httpcore tries `import sniffio` several times per request; a failed import is not cached and searches all of
        # sys.path every time (~1 ms a request here). Marking it absent makes it fail at once; httpcore then assumes asyncio.
        sys.modules["sniffio"] = None  # type: ignore[assignment]
    try:
        import uvloop

        loop_factory, loop_name = uvloop.new_event_loop, "uvloop"
    except ImportError:
        loop_factory, loop_name = None, "asyncio"
    try:
        with contextlib.ExitStack() as stack, asyncio.Runner(loop_factory=loop_factory) as runner:
            return run(args, stack, runner.run, loop_name)
    except KeyboardInterrupt:
        print("\ninterrupted: servers and database stopped", file=sys.stderr)
        return 130


def run(args: argparse.Namespace, stack: contextlib.ExitStack, run_async: Callable[[Awaitable[float]], float], loop_name: str) -> int:
    import fastapi
    import uvicorn

    workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="registry-bench-")))
    home = workdir / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONNECTOME_")}
    env |= {"CONNECTOME_HOME": str(home), "CONNECTOME_REGISTRY_DAILY_QUOTA": str(DAILY_QUOTA)}
    db_pid: int | None = None
    if args.postgres:
        cluster = stack.enter_context(throwaway_postgres())
        env["CONNECTOME_METADATA_URL"] = create_database(cluster.url, "registry_bench")
        db_pid = postmaster_pid(cluster.data)
        backend = f"PostgreSQL {cluster.version} (throwaway cluster on 127.0.0.1, fsync off): {env['CONNECTOME_METADATA_URL']}"
    elif args.metadata_url:
        env["CONNECTOME_METADATA_URL"] = args.metadata_url
        backend = f"given database {masked(args.metadata_url)}"
    else:
        backend = f"SQLite (WAL) {home / 'metadata.sqlite'}"

    prepared = prepare(env, args.tables, args.users, args.seed)
    cores = os.cpu_count() or 1
    pools = "one shared httpx.AsyncClient pool" if args.shared_pool else "one httpx.AsyncClient (one keep-alive connection) per client"
    print(
        f"registry load test: {args.clients} closed-loop clients x {args.seconds:g} s per scenario (+{WARMUP_SECONDS:g} s warm-up), "
        f"{pools}, one {loop_name} loop in this process"
    )
    print(
        f"machine: {cores} cores, shared by the load generator, the server under test{' and PostgreSQL' if db_pid else ''}: "
        f"requests/s is their joint ceiling"
    )
    print(f"metadata: {backend}")
    print(
        f"data: {len(prepared.names)} published Parquet tables ({prepared.files} files, {prepared.bytes / (1 << 20):.1f} MiB) over "
        f"{', '.join(DATASTACKS)}; {len(prepared.tokens)} users with one token each (read on all three), client i as user i mod "
        f"{len(prepared.tokens)}; set-up {prepared.seconds:.1f} s"
    )
    print(f"servers: uvicorn {uvicorn.__version__}, FastAPI {fastapi.__version__}; registry {args.workers} worker process(es), peer one; Python {sys.version.split()[0]}")

    results: list[ScenarioResult] = []
    port, registry_log = free_port(), workdir / "registry.log"
    registry_args = [str(VENV_BIN / "connectome"), "registry", "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", str(args.workers)]
    with server_process(registry_args, env, registry_log, port) as server:
        base_url = f"http://127.0.0.1:{port}"
        # The peer serves the bytes of a real limit-50 search response.
        payload = httpx.get(f"{base_url}/v1/tables", params={"limit": SEARCH_LIMIT}, headers={"Authorization": f"Bearer {prepared.tokens[0]}"})
        payload.raise_for_status()
        (workdir / "peer.json").write_bytes(payload.content)
        for name, request in (("registry search", search_request), ("registry access", access_request(prepared.names))):
            print(f"running {name} …", flush=True)
            results.append(run_scenario(name, base_url, request, prepared.tokens, args, server.pid, db_pid, run_async))

    peer_port, peer_log = free_port(), workdir / "peer.log"
    peer_args = [sys.executable, "-c", PEER_SOURCE, str(peer_port), str(workdir / "peer.json")]
    with server_process(peer_args, env, peer_log, peer_port) as peer:
        print("running peer search …", flush=True)
        peer_url = f"http://127.0.0.1:{peer_port}"
        results.append(run_scenario("peer (FastAPI)", peer_url, search_request, prepared.tokens, args, peer.pid, None, run_async))

    print_table(results)
    search = results[0].tally
    if search.latencies:
        print(
            f"\nsearch responses: {search.response_bytes / len(search.latencies) / 1024:.1f} KiB on average; "
            f"peer document: {len(payload.content) / 1024:.1f} KiB (the unfiltered limit-50 search)"
        )
    print_server_log("registry", registry_log)
    print_server_log("peer", peer_log)
    return 1 if any(r.errors for r in results) else 0


if __name__ == "__main__":
    raise SystemExit(main())
