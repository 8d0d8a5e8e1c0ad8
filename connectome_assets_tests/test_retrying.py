"""Retries after transient errors, never after data errors: the loop, the classifiers on the errors
the real drivers raise, a real HTTP proxy failing in front of fake-gcs-server, and real chDB uploads."""

from __future__ import annotations

import datetime as dt
import http.server
import socket
import threading
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator

import pyarrow as pa
import pyarrow.fs as pafs
import pytest
from clickhouse_connect.driver import exceptions as ch
from clickhouse_connect.driver._backend.httpcommon import build_http_error

from connectome_assets.metadata.store import MetadataStore
from connectome_assets.retrying import (
    CLICKHOUSE_TRANSIENT_CODES,
    RetryPolicy,
    is_transient_clickhouse_error,
    is_transient_gcs_error,
    retry_call,
)
from connectome_assets.warehouse.upload import UploadVerificationError, dataset_row_count, upload_table_atomically
from connectome_assets_tests.warehouse.upload_process import connections


class Recorder:
    """Collects what the loop reports and how long it was told to sleep; time moves only by sleeping."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.sleeps: list[float] = []
        self.now = 0.0

    def report(self, line: str) -> None:
        self.lines.append(line)

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    def clock(self) -> float:
        return self.now


def failing(times: int, error: Exception, result: str = "done"):
    calls = []

    def operation() -> str:
        calls.append(1)
        if len(calls) <= times:
            raise error
        return result

    return operation, calls


# The loop ---------------------------------------------------------------------------------
def test_transient_errors_are_retried_with_jittered_exponential_backoff() -> None:
    rec = Recorder()
    operation, calls = failing(3, ConnectionResetError("reset by peer"))
    policy = RetryPolicy(attempts=5, first_delay=1.0, multiplier=2.0, max_delay=3.0)
    result = retry_call(operation, what="read", transient=is_transient_clickhouse_error, report=rec.report, policy=policy, sleep=rec.sleep, clock=rec.clock, jitter=lambda: 0.5)
    assert result == "done" and len(calls) == 4
    assert rec.sleeps == [0.75, 1.5, 2.25]  # 1, 2, 4 capped at 3; each 3/4 of its ceiling at jitter 0.5
    assert rec.lines[0] == "read: attempt 1 of 5 failed with a transient error (ConnectionResetError: reset by peer); retrying in 0.8 s"
    assert len(rec.lines) == 3


def test_delays_stay_between_half_and_all_of_the_ceiling() -> None:
    policy = RetryPolicy(first_delay=2.0, multiplier=3.0, max_delay=100.0)
    assert [policy.delay(n, 0.0) for n in (1, 2, 3)] == [1.0, 3.0, 9.0]
    assert [policy.delay(n, 0.999999) for n in (1, 2, 3)] == pytest.approx([2.0, 6.0, 18.0], rel=1e-5)


def test_a_data_error_is_raised_at_the_first_attempt() -> None:
    rec = Recorder()
    operation, calls = failing(1, ValueError("weight -1 in connections.feather"))
    with pytest.raises(ValueError, match="weight -1"):
        retry_call(operation, what="upload", transient=is_transient_clickhouse_error, report=rec.report, sleep=rec.sleep, clock=rec.clock)
    assert (len(calls), rec.lines, rec.sleeps) == (1, [], [])


def test_attempts_and_total_time_are_bounded() -> None:
    rec = Recorder()
    operation, calls = failing(10, TimeoutError("timed out"))
    with pytest.raises(TimeoutError):
        retry_call(operation, what="q", transient=is_transient_clickhouse_error, report=rec.report, policy=RetryPolicy(attempts=3), sleep=rec.sleep, clock=rec.clock, jitter=lambda: 0.0)
    assert len(calls) == 3 and rec.lines[-1].startswith("q: giving up after 3 attempts")

    rec = Recorder()
    operation, calls = failing(10, TimeoutError("timed out"))
    policy = RetryPolicy(attempts=100, first_delay=10.0, multiplier=1.0, total_seconds=25.0)
    with pytest.raises(TimeoutError):
        retry_call(operation, what="q", transient=is_transient_clickhouse_error, report=rec.report, policy=policy, sleep=rec.sleep, clock=rec.clock, jitter=lambda: 1.0)
    assert len(calls) == 3 and rec.now == 20.0  # a third wait would end past 25 s


# ClickHouse: the errors clickhouse-connect raises ----------------------------------------
URL = "https://clickhouse.example:8443"


def http_error(status: int, code: str | None, body: str = "", retried: bool = False) -> ch.DatabaseError:
    """The exception clickhouse-connect's HTTP backend raises for a failed response (its own builder)."""
    return build_http_error(status, code, body, True, URL, retried)


@pytest.mark.parametrize("code", sorted(CLICKHOUSE_TRANSIENT_CODES))
def test_transient_clickhouse_codes_are_retried(code: int) -> None:
    name = CLICKHOUSE_TRANSIENT_CODES[code]
    assert is_transient_clickhouse_error(http_error(500, str(code), f"Code: {code}. DB::Exception: busy. ({name})"))


@pytest.mark.parametrize(
    "error",
    [
        pytest.param(http_error(503, None, "", retried=True), id="503-after-driver-retries"),
        pytest.param(http_error(502, None, "<html>bad gateway</html>"), id="502-proxy"),
        pytest.param(http_error(504, None, ""), id="504"),
        pytest.param(http_error(429, None, ""), id="429"),
        pytest.param(ch.OperationalError(f"Error HTTPConnectionPool: Max retries exceeded executing HTTP request attempt 1 ({URL})"), id="transport"),
        pytest.param(ch.StreamFailureError("Code: 210. DB::NetException: Connection reset by peer. (NETWORK_ERROR)", code=210), id="stream-210"),
        pytest.param(ConnectionResetError(104, "Connection reset by peer"), id="socket-reset"),
    ],
)
def test_connection_and_busy_server_errors_are_transient(error: Exception) -> None:
    assert is_transient_clickhouse_error(error)


@pytest.mark.parametrize(
    "error",
    [
        pytest.param(http_error(400, "62", "Code: 62. DB::Exception: Syntax error: failed at position 1. (SYNTAX_ERROR)"), id="syntax"),
        pytest.param(http_error(500, "53", "Code: 53. DB::Exception: Type mismatch. (TYPE_MISMATCH)"), id="type-mismatch"),
        pytest.param(http_error(500, "241", "Code: 241. DB::Exception: Memory limit exceeded. (MEMORY_LIMIT_EXCEEDED)"), id="memory"),
        pytest.param(http_error(404, None, "Not found"), id="404"),
        pytest.param(http_error(403, None, "forbidden"), id="403"),
        pytest.param(UploadVerificationError("db.synapses: staged 9 rows but sent 10"), id="verification"),
        pytest.param(pa.ArrowInvalid("Could not convert 'x' with type str"), id="arrow-value"),
        pytest.param(KeyError("pre_neuron_id"), id="missing-column"),
    ],
)
def test_query_and_data_errors_are_not_transient(error: Exception) -> None:
    assert not is_transient_clickhouse_error(error)


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT toUInt8('not a number')",  # a bad value
        "SELECT missing_column FROM system.one",  # a missing column
        "SELECT 1 + 'a'",  # a type mismatch
    ],
)
def test_real_chdb_data_errors_are_not_transient(clickhouse, sql: str) -> None:
    with pytest.raises(ch.DatabaseError) as raised:
        clickhouse.command(sql)
    assert raised.value.code is not None and not is_transient_clickhouse_error(raised.value)


class StatusServer:
    """A real HTTP server on 127.0.0.1 answering every request with one status and optional ClickHouse code header."""

    def __init__(self, status: int, clickhouse_code: str | None = None) -> None:
        outer = self
        self.requests = 0

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                self._answer()

            def do_POST(self) -> None:  # noqa: N802
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                self._answer()

            def _answer(self) -> None:
                outer.requests += 1
                self.send_response(status)
                if clickhouse_code:
                    self.send_header("X-ClickHouse-Exception-Code", clickhouse_code)
                body = f"Code: {clickhouse_code}. DB::Exception: refused. (X)".encode() if clickhouse_code else b""
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.mark.parametrize(("status", "code", "transient"), [(503, None, True), (502, None, True), (400, "62", False), (500, "159", True), (404, None, False)])
def test_errors_of_a_real_http_endpoint_through_clickhouse_connect(status: int, code: str | None, transient: bool) -> None:
    import clickhouse_connect

    server = StatusServer(status, code)
    try:
        with pytest.raises(ch.DatabaseError) as raised:
            clickhouse_connect.get_client(host="127.0.0.1", port=server.port, interface="http", connect_timeout=5)
    finally:
        server.close()
    assert is_transient_clickhouse_error(raised.value) is transient


def test_a_refused_connection_is_transient() -> None:
    import clickhouse_connect

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ch.OperationalError) as raised:
        clickhouse_connect.get_client(host="127.0.0.1", port=port, interface="http", connect_timeout=5)
    assert is_transient_clickhouse_error(raised.value)


# Uploads through a real chDB client -------------------------------------------------------
class FakeFlakyClickHouse:
    """Fake transient failures in front of a real chDB client: its first `failures` inserts raise the
    error clickhouse-connect raises for an HTTP 503. A fake because no ClickHouse server (nor a network
    path to one) can run here, and chDB, being embedded, never fails transiently. Every other call,
    and every insert after the failures, goes to the real client."""

    def __init__(self, client, failures: int) -> None:
        self._client, self.failures, self.inserts = client, failures, 0

    def insert_arrow(self, table: str, data: pa.Table, **kwargs):
        self.inserts += 1
        if self.inserts <= self.failures:
            raise http_error(503, None, "", retried=True)
        return self._client.insert_arrow(table, data, **kwargs)

    def __getattr__(self, name: str):
        return getattr(self._client, name)


def staging_tables(client, database: str) -> int:
    return client.command(f"SELECT count() FROM system.tables WHERE database = '{database}' AND startsWith(name, '_staging_')")


def test_a_rereadable_upload_succeeds_after_transient_failures(clickhouse, database: str, metadata_store: MetadataStore) -> None:
    dataset = metadata_store.ensure_dataset("manc", "flyem_feather")
    flaky, rec = FakeFlakyClickHouse(clickhouse, failures=2), Recorder()
    result = upload_table_atomically(flaky, database, "synapses", dataset, [connections([(1, 2, 3), (2, 3, 4)])], metadata_store, report=rec.report, sleep=rec.sleep)
    assert (result.rows, flaky.inserts, len(rec.sleeps)) == (2, 3, 2)
    assert len(rec.lines) == 2
    for number, line in enumerate(rec.lines, start=1):
        assert line.startswith(f"upload of {database}.synapses for dataset {dataset}: attempt {number} of 3 failed with a transient error (OperationalError")
        assert "HTTP status 503" in line
    state = metadata_store.table_state(dataset, "synapses")
    assert (state.upload_state, state.row_count) == ("uploaded", 2)
    assert staging_tables(clickhouse, database) == 0  # each failed attempt dropped its own staging table


def test_a_callable_source_is_read_again_for_each_attempt(clickhouse, database: str, metadata_store: MetadataStore) -> None:
    dataset = metadata_store.ensure_dataset("manc", "flyem_feather")
    reads = []

    def source() -> Iterator[pa.RecordBatch]:
        reads.append(1)
        yield connections([(5, 6, 1)])

    rec = Recorder()
    upload_table_atomically(FakeFlakyClickHouse(clickhouse, failures=1), database, "synapses", dataset, source, metadata_store, report=rec.report, sleep=rec.sleep)
    assert len(reads) == 2 and dataset_row_count(clickhouse, database, "synapses", dataset) == 1


def test_a_one_shot_stream_and_a_data_error_get_exactly_one_attempt(clickhouse, database: str, metadata_store: MetadataStore) -> None:
    dataset = metadata_store.ensure_dataset("manc", "flyem_feather")
    upload_table_atomically(clickhouse, database, "synapses", dataset, [connections([(1, 2, 3)])], metadata_store)

    flaky, rec = FakeFlakyClickHouse(clickhouse, failures=1), Recorder()
    stream = iter([connections([(7, 8, 1)])])  # consumed batches cannot be sent again
    with pytest.raises(ch.OperationalError, match="HTTP status 503"):
        upload_table_atomically(flaky, database, "synapses", dataset, stream, metadata_store, report=rec.report, sleep=rec.sleep)
    assert (flaky.inserts, rec.sleeps) == (1, [])

    bad = pa.table({"pre_neuron_id": pa.array(["x"]), "post_neuron_id": pa.array([1], pa.uint64())})  # a bad value and missing columns
    flaky = FakeFlakyClickHouse(clickhouse, failures=0)
    with pytest.raises(ch.DatabaseError) as raised:
        upload_table_atomically(flaky, database, "synapses", dataset, [bad], metadata_store, report=rec.report, sleep=rec.sleep)
    assert not is_transient_clickhouse_error(raised.value)
    assert (flaky.inserts, rec.sleeps, rec.lines) == (1, [], [])
    state = metadata_store.table_state(dataset, "synapses")
    assert (state.upload_state, state.row_count) == ("failed", 1)
    assert dataset_row_count(clickhouse, database, "synapses", dataset) == 1  # the previous rows


# GCS: a real HTTP proxy that fails in front of fake-gcs-server ----------------------------
class FaultInjectingProxy:
    """A real HTTP proxy on 127.0.0.1 in front of fake-gcs-server: answers the next `fail` requests
    under `path_prefix` with `status` and forwards every other request unchanged. It counts the
    requests under the prefix (google-cloud-storage also fetches bucket metadata in the background,
    at moments of its own choosing: those requests are neither counted nor failed)."""

    def __init__(self, upstream: str, path_prefix: str = "/download/") -> None:
        outer = self
        self.fail, self.status, self.requests = 0, 503, 0

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _forward(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0)) or None
                counted = self.path.startswith(path_prefix)
                outer.requests += counted
                if counted and outer.fail > 0:
                    outer.fail -= 1
                    payload = b'{"error": {"code": %d, "message": "injected"}}' % outer.status
                    self._send(outer.status, {"Content-Type": "application/json"}, payload)
                    return
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")}
                request = urllib.request.Request(upstream + self.path, data=body, method=self.command, headers=headers)
                try:
                    response = urllib.request.urlopen(request)
                except urllib.error.HTTPError as error:
                    response = error
                self._send(response.status, dict(response.headers.items()), response.read())

            def _send(self, status: int, headers: dict[str, str], payload: bytes) -> None:
                self.send_response(status)
                for key, value in headers.items():
                    if key.lower() not in ("content-length", "transfer-encoding", "connection"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _forward

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def failing(self, count: int, status: int) -> FaultInjectingProxy:
        self.fail, self.status, self.requests = count, status, 0
        return self

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def gcs_proxy(fake_gcs: str, gcs_bucket) -> Iterator[tuple[FaultInjectingProxy, object]]:
    """The proxy and the test's bucket as a google-cloud-storage client sees it through the proxy."""
    from google.api_core.client_options import ClientOptions
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    gcs_bucket.blob("sources/neurons.csv").upload_from_string(b"bodyId\n1\n")
    proxy = FaultInjectingProxy(fake_gcs)
    client = storage.Client(project="test", credentials=AnonymousCredentials(), client_options=ClientOptions(api_endpoint=proxy.url))
    bucket = client.bucket(gcs_bucket.name)
    try:
        yield proxy.failing(0, 503), bucket
    finally:
        proxy.close()


class Download:
    """One object read per call with google-cloud-storage's own retry off (ours is under test)."""

    def __init__(self, bucket, name: str) -> None:
        self.bucket, self.name, self.attempts = bucket, name, 0

    def __call__(self) -> bytes:
        self.attempts += 1
        return self.bucket.blob(self.name).download_as_bytes(retry=None)


def test_gcs_503s_are_retried_until_the_read_succeeds(gcs_proxy) -> None:
    proxy, bucket = gcs_proxy
    rec = Recorder()
    proxy.failing(3, 503)
    flaky = Download(bucket, "sources/neurons.csv")
    assert retry_call(flaky, what="gcs read", transient=is_transient_gcs_error, report=rec.report, sleep=rec.sleep, clock=rec.clock) == b"bodyId\n1\n"
    assert (flaky.attempts, len(rec.sleeps), proxy.requests) == (4, 3, 4)
    assert "ServiceUnavailable" in rec.lines[0] and "retrying in" in rec.lines[0]

    proxy.failing(1, 429)
    throttled = Download(bucket, "sources/neurons.csv")
    retry_call(throttled, what="gcs read", transient=is_transient_gcs_error, report=rec.report, sleep=rec.sleep, clock=rec.clock)
    assert throttled.attempts == 2


@pytest.mark.parametrize(("status", "name", "fail"), [(404, "NotFound", 0), (400, "BadRequest", 1), (403, "Forbidden", 1)])
def test_gcs_client_errors_get_exactly_one_attempt(gcs_proxy, status: int, name: str, fail: int) -> None:
    from google.api_core import exceptions as api

    proxy, bucket = gcs_proxy
    proxy.failing(fail, status)
    rec = Recorder()
    read = Download(bucket, "sources/missing.csv" if status == 404 else "sources/neurons.csv")
    with pytest.raises(api.GoogleAPICallError) as raised:
        retry_call(read, what="gcs read", transient=is_transient_gcs_error, report=rec.report, sleep=rec.sleep, clock=rec.clock)
    assert type(raised.value).__name__ == name and raised.value.code == status
    assert (read.attempts, proxy.requests, rec.sleeps, rec.lines) == (1, 1, [], [])


def test_pyarrow_gcs_errors_are_transient_only_when_unavailable(fake_gcs: str, gcs_bucket) -> None:
    """pyarrow's GcsFileSystem retries by itself (google-cloud-cpp) and raises once that gives up."""
    gcs_bucket.blob("sources/neurons.csv").upload_from_string(b"bodyId\n1\n")
    proxy = FaultInjectingProxy(fake_gcs, path_prefix="/")
    try:
        fs = pafs.GcsFileSystem(anonymous=True, scheme="http", endpoint_override=proxy.url.removeprefix("http://"), retry_time_limit=dt.timedelta(seconds=1))
        proxy.failing(10_000, 503)
        with pytest.raises(OSError) as unavailable:
            fs.get_file_info(f"{gcs_bucket.name}/sources/neurons.csv")
        assert "google::cloud::Status(" in str(unavailable.value) and is_transient_gcs_error(unavailable.value)

        proxy.failing(0, 503)
        with pytest.raises(OSError) as missing:
            fs.open_input_stream(f"{gcs_bucket.name}/sources/{uuid.uuid4().hex}.csv")
        assert not is_transient_gcs_error(missing.value)
    finally:
        proxy.close()
    with pytest.raises(FileNotFoundError) as local:
        pafs.LocalFileSystem().open_input_stream("/nonexistent/neurons.csv")
    assert not is_transient_gcs_error(local.value)


def test_a_synapses_import_is_retried_whole_and_its_filter_counts_are_the_last_attempts(
    clickhouse, database: str, metadata_store: MetadataStore, tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from connectome_assets.connectome.ingest import import_neurons, import_synapses
    from connectome_assets.warehouse import upload
    from connectome_assets_tests.releases import entry, write_release

    monkeypatch.setattr(upload, "UPLOAD_RETRY", upload.RetryPolicy(attempts=3, first_delay=0.01))  # no real wait
    release = entry("worm", write_release(tmp_path / "worm", [1, 2, 3], [(1, 2, 5), (2, 3, 1), (3, 9, 2)]))
    import_neurons(release, clickhouse, database, metadata_store)
    flaky, lines = FakeFlakyClickHouse(clickhouse, failures=1), []
    imported = import_synapses(release, flaky, database, metadata_store, lines.append)
    assert flaky.inserts == 2 and any("attempt 1 of 3 failed with a transient error" in line for line in lines)
    assert (imported.rows_written, imported.filter.rows_read, imported.filter.rows_dropped) == (2, 3, 1)  # not doubled
    assert imported.progress["rows"] == 3
    assert metadata_store.table_state(imported.dataset_id, "synapses").row_count == 2
