"""Small flyem_feather releases written on the fly for tests."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.feather as feather

from connectome_assets.connectome.catalog import DatasetEntry


def write_release(
    directory: Path,
    body_ids: list[int],
    edges: list[tuple[int, int, int]],
    polarity: pa.Array | None = None,
    extra: dict[str, pa.Array] | None = None,
) -> dict[str, str]:
    """body-annotations and connectome-weights Feather files; returns the catalog sources."""
    directory.mkdir(parents=True, exist_ok=True)
    columns: dict[str, pa.Array] = {
        "bodyId": pa.array(body_ids, pa.int64()),
        "type": pa.array([f"T{i % 3}" for i in range(len(body_ids))]),
        "instance": pa.array([f"T{i % 3}_R" for i in range(len(body_ids))]),
        "status": pa.array(["Traced"] * len(body_ids)),
    }
    if polarity is not None:
        columns["polarity"] = polarity
    columns.update(extra or {})
    annotations, weights = directory / "body-annotations-test.feather", directory / "connectome-weights-test.feather"
    feather.write_feather(pa.table(columns), annotations)
    pre, post, weight = zip(*edges) if edges else ((), (), ())
    feather.write_feather(
        pa.table({"body_pre": pa.array(pre, pa.int64()), "body_post": pa.array(post, pa.int64()), "weight": pa.array(weight, pa.int32())}),
        weights,
    )
    return {"annotations": str(annotations), "weights": str(weights)}


def entry(name: str, sources: dict[str, str], model: str = "flyem_feather") -> DatasetEntry:
    return DatasetEntry(name=name, model=model, sources=sources)
