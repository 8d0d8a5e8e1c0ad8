"""Flight ingest benchmark: a synapses upload over Arrow Flight on loopback, beside the direct path.

One synthetic release (seeded; `--neurons` annotated bodies, `--rows` connection rows in 64 Ki-row
record batches, each endpoint annotated with probability sqrt(`--survive`)) is written as Feather
once. Then, each in a fresh home (its own chDB path and SQLite metadata):

* direct: `import_neurons`, then the timed `import_synapses` — Feather read -> endpoint filter ->
  canonical rows -> atomic upload — in a fresh (spawned) process;
* flight: `connectome flight serve` as its own process; the neurons uploaded over Flight, then the
  timed `upload_to_flight` of the synapses from this process: the same Feather batches, renamed to
  the canonical columns, in batches of at most 65,536 rows in one DoPut stream, received, filtered
  and swapped in by the server through the same functions.

Both must keep the same rows. Printed: source rows per second of the synapses upload, kept rows,
wall seconds, and peak memory (the direct process's RSS; the client's RSS and the server's RSS
sampled every 10 ms during the upload).

    .venv/bin/python benchmarks/flight.py [--rows 8388608] [--neurons 100000] [--survive 0.25]
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.feather as feather
import pyarrow.ipc as ipc

sys.path.insert(0, str(Path(__file__).resolve().parent))
from measure import Section, in_fresh_process  # noqa: E402

BATCH_ROWS = 1 << 16
TOKEN = "benchmark-token"


def write_release(directory: Path, neurons: int, rows: int, survive: float, seed: int) -> dict[str, str]:
    """annotations + weights Feather files (weights streamed batch by batch, LZ4 as pyarrow writes them)."""
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    annotated = rng.choice(np.arange(10_000, 10_000 + 50 * neurons, dtype=np.int64), neurons, replace=False)
    unannotated = np.arange(10_000 + 50 * neurons, 10_000 + 60 * neurons, dtype=np.int64)
    annotations = directory / "annotations.feather"
    feather.write_feather(pa.table({"bodyId": annotated, "type": pa.array([f"T{i % 97}" for i in range(neurons)]), "status": ["Traced"] * neurons}), annotations)
    weights = directory / "weights.feather"
    schema = pa.schema([("body_pre", pa.int64()), ("body_post", pa.int64()), ("weight", pa.int32())])
    p_endpoint = survive**0.5
    with ipc.new_file(weights, schema, options=ipc.IpcWriteOptions(compression="lz4")) as writer:
        for start in range(0, rows, BATCH_ROWS):
            n = min(BATCH_ROWS, rows - start)

            def endpoint(n: int = n) -> np.ndarray:
                keep = rng.random(n) < p_endpoint
                return np.where(keep, rng.choice(annotated, n), rng.choice(unannotated, n))

            writer.write_batch(pa.record_batch([endpoint(), endpoint(), rng.integers(1, 50, n, dtype=np.int32)], schema=schema))
    return {"annotations": str(annotations), "weights": str(weights)}


def direct_import(home: str, sources: dict[str, str]) -> dict:
    """The direct path in this (fresh) process: neurons untimed, synapses timed."""
    from connectome_assets.connectome.catalog import DatasetEntry, write_entry
    from connectome_assets.connectome.ingest import import_neurons, import_synapses
    from connectome_assets.metadata.store import MetadataStore
    from connectome_assets.settings import load_settings
    from connectome_assets.warehouse.client import connect

    settings = load_settings({"CONNECTOME_HOME": home})
    entry = DatasetEntry("bench", "flyem_feather", sources, {}, "", str(settings.catalog / "bench.yaml"))
    write_entry(settings.catalog, entry)
    store = MetadataStore(settings.metadata_url)
    store.migrate()
    client = connect(settings.clickhouse_url)
    import_neurons(entry, client, settings.clickhouse_database, store)
    with Section() as measured:
        imported = import_synapses(entry, client, settings.clickhouse_database, store)
    return {"rows": imported.filter.rows_read, "kept": imported.rows_written, "measured": measured}


def canonical_synapse_batches(weights: str):
    """The Feather's batches as the Flight synapses schema (a rename: the ids stay int64)."""
    names = ["pre_neuron_id", "post_neuron_id", "weight"]
    with pa.memory_map(weights) as source:
        reader = ipc.open_file(source)
        for index in range(reader.num_record_batches):
            yield reader.get_batch(index).rename_columns(names)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PeakRss(threading.Thread):
    """Samples another process's RSS every 10 ms (psutil) until stopped."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        import psutil

        self.process, self.peak_mib, self.stop = psutil.Process(pid), 0.0, threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.01):
            self.peak_mib = max(self.peak_mib, self.process.memory_info().rss / 2**20)


def flight_import(home: str, sources: dict[str, str]) -> dict:
    from connectome_assets.flight.client import upload_to_flight

    env = {**os.environ, "CONNECTOME_HOME": home, "CONNECTOME_FLIGHT_TOKEN": TOKEN}
    connectome = str(Path(sys.executable).parent / "connectome")
    subprocess.run([connectome, "dataset", "add", "bench", "--model", "flight"], env=env, check=True, capture_output=True)
    port = free_port()
    server = subprocess.Popen([connectome, "flight", "serve", "--port", str(port)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"grpc://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:  # listening once a TCP connection is accepted
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the Flight server did not start: {server.stderr.read().decode()[-2000:]}") from None
                time.sleep(0.2)
        annotations = feather.read_table(sources["annotations"]).rename_columns(["neuron_id", "type", "status"])
        upload_to_flight(url, "bench", "neurons", annotations, TOKEN)
        sampler = PeakRss(server.pid)
        sampler.start()
        with Section() as measured:
            uploaded = upload_to_flight(url, "bench", "synapses", canonical_synapse_batches(sources["weights"]), TOKEN)
        sampler.stop.set()
        sampler.join()
        return {"rows": uploaded.rows_sent, "kept": uploaded.rows_accepted, "measured": measured, "server_peak_mib": sampler.peak_mib}
    finally:
        server.terminate()
        server.wait(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1 << 23)
    parser.add_argument("--neurons", type=int, default=100_000)
    parser.add_argument("--survive", type=float, default=0.25)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="flight-bench-") as work:
        sources = write_release(Path(work) / "release", args.neurons, args.rows, args.survive, args.seed)
        direct = in_fresh_process(direct_import, str(Path(work) / "direct"), sources)
        over_flight = flight_import(str(Path(work) / "flight"), sources)
    if (direct["rows"], direct["kept"]) != (over_flight["rows"], over_flight["kept"]):
        raise SystemExit(f"the paths disagree: direct {direct['rows']:,} read / {direct['kept']:,} kept, flight {over_flight['rows']:,} / {over_flight['kept']:,}")
    print(f"synapses: {args.rows:,} source rows, {direct['kept']:,} kept ({args.neurons:,} annotated neurons), 2 cores")
    print(f"{'path':<34} {'rows/s':>12} {'seconds':>8} {'peak MiB':>22}")
    for name, result, peak in (
        ("direct (Feather -> import_synapses)", direct, f"{direct['measured'].peak_rss_mib:,.0f} (process)"),
        ("Flight DoPut on loopback", over_flight, f"{over_flight['measured'].peak_rss_mib:,.0f} client, {over_flight['server_peak_mib']:,.0f} server"),
    ):
        seconds = result["measured"].seconds
        print(f"{name:<34} {result['rows'] / seconds:>12,.0f} {seconds:>8.2f} {peak:>22}")


if __name__ == "__main__":
    main()
