"""Registering what the platform produces: a dataset's Parquet exports and neuroglancer volumes.

Works through either client (HTTP or in-process). Every registration is published at once, so
the previous current version of the same table is deprecated and superseded by the new one.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from connectome_assets.registry.schemas import TableVersion

SOURCE_TABLES = ("neurons", "synapses")
PRODUCER = "connectome_assets"


def registry_table_name(dataset: str, table: str) -> str:
    """The registry name of a dataset's table (registry names are lower case)."""
    return f"{dataset}.{table}".lower()


def source_uri(source: str) -> str:
    """A catalog source (a URI or a local path) as a URI: lineage names data outside the registry by URI."""
    return source if "://" in source else f"file://{os.path.abspath(source)}"


def register_dataset_export(
    client: Any,
    manifest: dict,
    root: str,
    *,
    datastack: str,
    materialization_version: str,
    sources: Sequence[str],
    produced_by: str = f"{PRODUCER} feature_exports",
) -> list[TableVersion]:
    """Publish every table of one export (`manifest.json` at `root`): source tables first, derived from the
    dataset's source files, then each product derived from exactly those versions of `neurons` and `synapses`.
    """
    dataset, version, tables = manifest["dataset"], manifest["version"], manifest["tables"]
    order = [t for t in SOURCE_TABLES if t in tables] + sorted(t for t in tables if t not in SOURCE_TABLES)
    registered: dict[str, TableVersion] = {}
    for table in order:
        listed = tables[table]
        derived_from = [source_uri(s) for s in sources] if table in SOURCE_TABLES else [f"{v.name}@{v.version}" for t, v in registered.items() if t in SOURCE_TABLES]
        registered[table] = client.register(
            {
                "name": registry_table_name(dataset, table),
                "location": f"{root.rstrip('/')}/{listed['file']}",
                "format": "parquet",
                "datastack": datastack,
                "description": f"`{table}` of dataset {dataset}, exported from ClickHouse at graph source version {version} ({listed['rows']:,} rows).",
                "materialization_version": materialization_version,
                "derived_from": derived_from,
                "tags": ["connectome", "source" if table in SOURCE_TABLES else "product", table],
                "produced_by": produced_by,
                "status": "published",
            }
        )
    return list(registered.values())


def register_volume(
    client: Any,
    export: str,
    location: str,
    *,
    datastack: str,
    materialization_version: str,
    source: str,
    produced_by: str = f"{PRODUCER} volume_export",
) -> TableVersion:
    """Publish a neuroglancer precomputed volume built from a DVID export (`source`: the export's folder URI)."""
    return client.register(
        {
            "name": registry_table_name(export, "segmentation"),
            "location": location,
            "format": "neuroglancer_precomputed",
            "datastack": datastack,
            "description": f"Neuroglancer precomputed segmentation of DVID export {export} (sharded, compressed_segmentation).",
            "materialization_version": materialization_version,
            "derived_from": [source],
            "tags": ["volume", "segmentation"],
            "produced_by": produced_by,
            "status": "published",
        }
    )
