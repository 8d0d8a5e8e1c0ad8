"""`cect`: the C. elegans connectomes shipped in the PyPI package `cect`.

Option `reader` names a file of `cect/cache/` (e.g. `WitvlietDataReader8`, `Cook2019HermReader`).
Each holds node names and one N×N matrix per synapse class.

Neuron ids (the documented rule): a cell name is stripped of surrounding spaces and loses a
leading zero in its index for the ventral-cord classes (AS01 → AS1, as `cect` itself does);
its id is the first 8 bytes of BLAKE2b(name), big-endian, with the top bit cleared (so it
fits a signed 64-bit integer too). The same cell has the same id in every C. elegans dataset.

The annotated neurons are the cells `cect` knows as neurons; muscles, glia and other cells
appear only as connection endpoints and are dropped by the endpoint filter, never invented.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
from collections.abc import Iterator, Mapping
from importlib import resources
from typing import Any

import numpy as np
import pyarrow as pa

from connectome_assets.connectome.errors import CatalogError, SourceError
from connectome_assets.connectome.sources.base import ConnectionStream, SourceModel, canonical_connections, canonical_neurons

SYNAPSE_CLASSES = {"Generic_CS": "chemical", "Generic_GJ": "electrical"}


def cect_cell_name(raw: str) -> str:
    """The canonical spelling of a cect cell name."""
    from cect.Cells import remove_leading_index_zero

    return remove_leading_index_zero(raw.strip())


def cect_neuron_id(name: str) -> int:
    """Stable numeric id of a C. elegans cell name (see the module docstring)."""
    digest = hashlib.blake2b(name.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") & (2**63 - 1)


class CectPackage(SourceModel):
    name = "cect"

    def __init__(self, sources: Mapping[str, str], options: Mapping[str, Any], location: str) -> None:
        super().__init__(sources, options, location)
        reader = self.options.get("reader")
        if not reader:
            raise CatalogError(location, "source model 'cect' needs option 'reader' (e.g. WitvlietDataReader8)")
        try:
            cache = resources.files("cect") / "cache"
        except ModuleNotFoundError:
            raise CatalogError(location, "source model 'cect' needs the package cect (pip install --no-deps cect)") from None
        self.path = str(cache / f"{reader}.json")
        available = sorted(p.name[:-5] for p in cache.iterdir() if p.name.endswith(".json"))
        if f"{reader}.json" not in [p.name for p in cache.iterdir()]:
            raise CatalogError(location, f"cect has no reader '{reader}' (available: {', '.join(available)})")

    def source_uris(self) -> list[str]:
        return [self.path]

    def _load(self) -> tuple[list[str], dict[str, np.ndarray]]:
        try:
            with open(self.path) as handle:
                data = json.load(handle)
            names = [cect_cell_name(n) for n in data["nodes"]]
            matrices = {k: np.asarray(v, dtype=np.float64) for k, v in data["connections"].items()}
        except (OSError, ValueError, KeyError) as exc:
            raise SourceError(self.path, f"is not a readable cect connectome ({exc})") from None
        for kind, matrix in matrices.items():
            if matrix.shape != (len(names), len(names)):
                raise SourceError(self.path, f"matrix '{kind}' has shape {matrix.shape}, expected {len(names)}×{len(names)}")
        return names, matrices

    def read_neurons(self) -> pa.Table:
        from cect import Cells

        names, _ = self._load()
        neurons = sorted({n for n in names if Cells.is_any_neuron(n)})
        with contextlib.redirect_stdout(io.StringIO()):  # cect prints as it classifies
            classes = [Cells.get_SIM_class(n) or "" for n in neurons]
        ids = pa.array([cect_neuron_id(n) for n in neurons], pa.uint64())
        text = {"name": pa.array(neurons), "instance": pa.array(neurons), "class": pa.array(classes), "superclass": pa.array(["neuron"] * len(neurons))}
        return canonical_neurons(self.path, ids, "nodes", text, {})

    def check_connections(self) -> None:
        self._load()

    def connection_stream(self) -> ConnectionStream:
        names, matrices = self._load()
        ids = np.array([cect_neuron_id(n) for n in names], dtype=np.uint64)

        def batches() -> Iterator[pa.RecordBatch]:
            for kind, matrix in matrices.items():
                pre, post = np.nonzero(matrix)
                yield canonical_connections(
                    self.path,
                    pa.array(ids[pre]),
                    pa.array(ids[post]),
                    pa.array(matrix[pre, post]),
                    ("pre", "post", kind),
                    synapse_class=pa.array([SYNAPSE_CLASSES.get(kind, kind.lower())] * len(pre), pa.string()),
                )

        # A few thousand rows: built canonical straight away.
        return ConnectionStream(batches(), "pre_neuron_id", "post_neuron_id", lambda batch: batch)
