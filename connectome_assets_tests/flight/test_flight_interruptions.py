"""Uploads that stop half way without a word from the client: a client process killed with SIGKILL,
and a connection cut by the network (a real TCP proxy between client and server that drops both
sides). Either way the server must settle the upload as `failed`, swap nothing in, and keep the
previous rows; the table can be uploaded again at once."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.flight as flight

from connectome_assets.flight.client import server_sentence, upload_to_flight
from connectome_assets_tests.flight.helpers import TOKEN, FlightEnv, neurons, random_edges, wait_until_uploading

IDS = np.arange(1, 501, dtype=np.uint64)

# A client that sends the first two batches of a synapses upload, says so, then waits on its
# stdin for the rest (forever, unless killed first).
KILLED_CLIENT = """
import sys
import numpy as np
import pyarrow as pa
from connectome_assets.flight.client import upload_to_flight

url, token = sys.argv[1], sys.argv[2]
rng = np.random.default_rng(4)
ids = np.arange(1, 501, dtype=np.uint64)
table = pa.table({"pre_neuron_id": rng.choice(ids, 30_000), "post_neuron_id": rng.choice(ids, 30_000), "weight": rng.integers(1, 9, 30_000).astype(np.int32)})

def batches():
    for index, batch in enumerate(table.to_batches(max_chunksize=10_000)):
        if index == 2:
            print("sent 2 batches", flush=True)
            sys.stdin.readline()
        yield batch

upload_to_flight(url, "fl", "synapses", batches(), token, schema=table.schema, timeout_seconds=600)
"""


def with_previous_upload(env: FlightEnv) -> list[tuple]:
    """A flight dataset whose synapses already hold a good upload; returns its rows."""
    env.add_dataset("fl")
    env.upload("fl", "neurons", neurons(IDS))
    env.upload("fl", "synapses", random_edges(np.random.default_rng(1), IDS, 5_000))
    return env.rows("fl", "synapses", "pre_neuron_id, post_neuron_id, weight")


def assert_failed_and_kept(env: FlightEnv, previous: list[tuple]) -> str:
    state = env.settled_state("fl", "synapses")
    assert (state.upload_state, state.row_count) == ("failed", len(previous))
    assert env.rows("fl", "synapses", "pre_neuron_id, post_neuron_id, weight") == previous
    # Nothing holds the table any more: the next upload goes through at once.
    assert env.upload("fl", "synapses", random_edges(np.random.default_rng(2), IDS, 2_000)).rows_accepted == 2_000
    return state.error_message


def test_a_client_killed_mid_stream_leaves_the_previous_rows_and_failed(env: FlightEnv) -> None:
    previous = with_previous_upload(env)
    client = subprocess.Popen([sys.executable, "-c", KILLED_CLIENT, env.url, TOKEN], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert client.stdout.readline().strip() == "sent 2 batches"
        wait_until_uploading(env, "fl", "synapses")
        client.send_signal(signal.SIGKILL)
        client.wait(timeout=30)
    finally:
        client.kill()
        client.wait(timeout=30)
    # gRPC ends a cancelled call's stream as if it were complete: only the missing end-of-table
    # marker tells the server the client did not finish.
    assert "without the client's end-of-table marker; nothing was swapped in" in assert_failed_and_kept(env, previous)


class CuttingProxy:
    """A real TCP proxy on 127.0.0.1 in front of the Flight server; `cut()` drops both sides of every
    connection at once, as a failing network would."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.sockets: list[socket.socket] = []
        self.cut_off = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.cut_off.is_set():
            try:
                downstream, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            self.sockets += [downstream, upstream]
            for source, sink in ((downstream, upstream), (upstream, downstream)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass

    def cut(self) -> None:
        self.cut_off.set()
        self.listener.close()
        for sock in self.sockets:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")  # close with RST
            # shutdown wakes the pump blocked in recv on it; close alone would wait for that recv.
            sock.shutdown(socket.SHUT_RDWR)
            sock.close()


def test_a_connection_cut_mid_stream_fails_on_both_sides_and_leaves_the_previous_rows(env: FlightEnv) -> None:
    previous = with_previous_upload(env)
    proxy = CuttingProxy(int(env.url.rsplit(":", 1)[1]))
    table = random_edges(np.random.default_rng(3), IDS, 40_000)
    resume = threading.Event()

    def batches() -> Iterator[pa.RecordBatch]:
        for index, batch in enumerate(table.to_batches(max_chunksize=10_000)):
            if index == 2:
                resume.wait(60)  # the rest is sent after the network failed
            yield batch

    outcome: list[BaseException] = []

    def upload() -> None:
        try:
            upload_to_flight(f"grpc://127.0.0.1:{proxy.port}", "fl", "synapses", batches(), TOKEN, schema=table.schema, timeout_seconds=60)
        except BaseException as exc:  # noqa: BLE001 - the test inspects what the client raised
            outcome.append(exc)

    sender = threading.Thread(target=upload)
    sender.start()
    wait_until_uploading(env, "fl", "synapses")
    proxy.cut()
    resume.set()
    sender.join(60)
    assert not sender.is_alive()
    [raised] = outcome
    assert isinstance(raised, (flight.FlightError, pa.ArrowException)), raised
    assert "\n" not in server_sentence(raised)  # the CLI prints this one line
    # gRPC ends a cancelled call's stream as if it were complete: only the missing end-of-table
    # marker tells the server the client did not finish.
    assert "without the client's end-of-table marker; nothing was swapped in" in assert_failed_and_kept(env, previous)
