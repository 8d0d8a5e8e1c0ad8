"""One step of the killed-upload test, run as its own process (chDB binds one data path per process).

    python -m connectome_assets_tests.warehouse.upload_process STEP CHDB_PATH METADATA_URL [READY_FILE]

STEP is `seed` (upload the first good rows), `stall` (start an upload that stages a first batch,
touches READY_FILE, then blocks until it is killed), `inspect` (print the dataset's rows, leftover
staging tables and state) or `upload` (upload new rows, printing what the upload reported). Every
step goes through the real upload path, `upload_table_atomically`, and prints one JSON object.
"""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa

from connectome_assets.connectome.schemas import CONNECTION_SCHEMA
from connectome_assets.metadata.store import MetadataStore
from connectome_assets.warehouse.client import connect
from connectome_assets.warehouse.schema import ensure_schema
from connectome_assets.warehouse.upload import MIN_INSERT_ROWS, staging_prefix, upload_table_atomically

DATABASE = "connectome"
DATASET = "killed"
SEED_EDGES = [(1, 2, 7), (2, 3, 8), (3, 1, 9)]
NEW_EDGES = [(4, 5, 1), (5, 6, 2)]


def connections(edges: list[tuple[int, int, int]]) -> pa.RecordBatch:
    pre, post, weight = zip(*edges, strict=True) if edges else ((), (), ())
    columns = [pa.array(pre, pa.uint64()), pa.array(post, pa.uint64()), pa.array(weight, pa.uint32()), pa.array([""] * len(edges)), pa.array([""] * len(edges))]
    return pa.record_batch(columns, schema=CONNECTION_SCHEMA)


def stalls_after_first_insert(ready: Path) -> Iterator[pa.RecordBatch]:
    """One batch large enough to be inserted into staging, then a reader that never returns."""
    yield connections([(n, n + 1, 1) for n in range(MIN_INSERT_ROWS + 10)])
    ready.write_text("staged")  # asked for the next batch: the first one is in the staging table
    threading.Event().wait()
    raise AssertionError("unreachable: the process is killed while waiting")


def state_json(store: MetadataStore, dataset_id) -> dict:
    state = store.table_state(dataset_id, "synapses")
    if state is None:
        return {}
    return {
        "upload_state": state.upload_state,
        "row_count": state.row_count,
        "uploaded_at": state.uploaded_at.isoformat() if state.uploaded_at else None,
        "error_message": state.error_message,
        "upload_owner": state.upload_owner,
    }


def main(step: str, chdb_path: str, metadata_url: str, ready: str | None = None) -> None:
    client = connect(f"chdb://{chdb_path}")
    store = MetadataStore(metadata_url)
    store.migrate()
    dataset_id = store.ensure_dataset(DATASET, "flyem_feather")
    ensure_schema(client, DATABASE)
    out: dict = {}
    if step == "seed":
        upload_table_atomically(client, DATABASE, "synapses", dataset_id, [connections(SEED_EDGES)], store)
    elif step == "stall":
        upload_table_atomically(client, DATABASE, "synapses", dataset_id, stalls_after_first_insert(Path(ready)), store, insert_rows=MIN_INSERT_ROWS)
    elif step == "upload":
        reports: list[str] = []
        upload_table_atomically(client, DATABASE, "synapses", dataset_id, [connections(NEW_EDGES)], store, report=reports.append)
        out["reports"] = reports
    elif step != "inspect":
        raise SystemExit(f"unknown step {step!r}")
    rows = client.query(
        f"SELECT pre_neuron_id, post_neuron_id, weight FROM {DATABASE}.synapses WHERE dataset_id = {{ds:UUID}} ORDER BY pre_neuron_id",
        parameters={"ds": str(dataset_id)},
    ).result_rows
    staging = client.query(
        "SELECT name FROM system.tables WHERE database = {db:String} AND startsWith(name, {prefix:String})",
        parameters={"db": DATABASE, "prefix": staging_prefix("synapses", dataset_id)},
    ).result_rows
    out.update(rows=[list(row) for row in rows], staging=[name for (name,) in staging], state=state_json(store, dataset_id))
    store.dispose()
    print(json.dumps(out))


if __name__ == "__main__":
    main(*sys.argv[1:])
