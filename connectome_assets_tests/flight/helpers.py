"""What the Flight tests share: `FlightEnv`, a Flight ingest server running in a thread of the test
process (so it shares the process's one chDB; fixture `env` in conftest.py), and the tables they send."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator

import numpy as np
import pyarrow as pa

from connectome_assets.connectome.catalog import DatasetEntry, write_entry
from connectome_assets.flight.client import upload_to_flight
from connectome_assets.metadata.store import MetadataStore
from connectome_assets.settings import Settings
from connectome_assets.warehouse.client import connect

TOKEN = "settings-token-for-tests"


@dataclasses.dataclass
class FlightEnv:
    settings: Settings
    url: str
    state: MetadataStore

    def add_dataset(self, name: str) -> None:
        write_entry(self.settings.catalog, DatasetEntry(name, "flight", location=str(self.settings.catalog / f"{name}.yaml")))

    def upload(self, dataset: str, table: str, data: pa.Table | Iterator[pa.RecordBatch], **options) -> object:
        return upload_to_flight(self.url, dataset, table, data, options.pop("token", TOKEN), timeout_seconds=60, **options)

    def rows(self, dataset: str, table: str, columns: str) -> list[tuple]:
        dataset_id = self.state.dataset_id(dataset)
        db = self.settings.clickhouse_database
        return connect(self.settings.clickhouse_url).query(
            f"SELECT {columns} FROM {db}.{table} WHERE dataset_id = {{ds:UUID}} ORDER BY {columns}", parameters={"ds": str(dataset_id)}
        ).result_rows

    def upload_state(self, dataset: str, table: str):
        return self.state.table_state(self.state.dataset_id(dataset), table)

    def settled_state(self, dataset: str, table: str):
        """The state once the server has finished with the stream (it may still be swapping when the client returns)."""
        deadline = time.monotonic() + 30
        while (found := self.upload_state(dataset, table)) is None or found.upload_state == "uploading":
            if time.monotonic() > deadline:
                raise AssertionError(f"{dataset}/{table} still {found}")
            time.sleep(0.05)
        return found


def neurons(ids: list[int] | np.ndarray) -> pa.Table:
    ids = np.asarray(ids, np.uint64)
    return pa.table({"neuron_id": ids, "type": [f"T{i % 3}" for i in range(len(ids))], "hemilineage": ["07B"] * len(ids)})


def synapses(pre: np.ndarray, post: np.ndarray, weight: np.ndarray) -> pa.Table:
    return pa.table({"pre_neuron_id": pa.array(pre, pa.uint64()), "post_neuron_id": pa.array(post, pa.uint64()), "weight": pa.array(weight, pa.int32())})


def random_edges(rng: np.random.Generator, ids: np.ndarray, rows: int) -> pa.Table:
    return synapses(rng.choice(ids, rows), rng.choice(ids, rows), rng.integers(1, 50, rows))


def wait_until_uploading(env: FlightEnv, dataset: str, table: str) -> None:
    deadline = time.monotonic() + 30
    while dataset not in env.state.dataset_names() or (found := env.upload_state(dataset, table)) is None or found.upload_state != "uploading":
        assert time.monotonic() < deadline, f"the upload of {dataset}/{table} never claimed the table"
        time.sleep(0.05)


class ClientFailed(RuntimeError):
    """The client's own source broke half way (not the network, not the server)."""


def failing_after(table: pa.Table, batches: int, rows: int) -> Iterator[pa.RecordBatch]:
    """`table` in batches of `rows`, breaking with ClientFailed before batch number `batches`."""
    for index, batch in enumerate(table.to_batches(max_chunksize=rows)):
        if index == batches:
            raise ClientFailed("the client's source broke")
        yield batch
