"""The dataset catalog: one YAML entry per dataset, `$CONNECTOME_CATALOG/<name>.yaml`.

An entry names its source model, its source URIs, model options and a description. Names are
the Dagster partition keys of the `datasets` partitions.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from connectome_assets.connectome.errors import CatalogError
from connectome_assets.connectome.sources import SourceModel, open_source_model
from connectome_assets.metadata.store import MetadataStore

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


@dataclass(frozen=True)
class DatasetEntry:
    name: str
    model: str
    sources: dict[str, str] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    location: str = ""

    def source_model(self) -> SourceModel:
        return open_source_model(self.model, self.sources, self.options, self.location)

    def as_yaml(self) -> str:
        body = {"name": self.name, "model": self.model, "sources": self.sources, "options": self.options, "description": self.description}
        return yaml.safe_dump(body, sort_keys=False)


def check_dataset_name(name: str, location: str) -> None:
    if not NAME_PATTERN.match(name):
        raise CatalogError(location, f"dataset name {name!r} must be letters, digits, '_', '-' or '.' (at most 128, not starting with a symbol)")


def entry_path(catalog: Path, name: str) -> Path:
    return catalog / f"{name}.yaml"


def parse_entry(text: str, location: str, expected_name: str | None = None) -> DatasetEntry:
    """A catalog entry from its YAML text; every problem names the entry's file."""
    try:
        body = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise CatalogError(location, f"is not valid YAML{where} ({getattr(exc, 'problem', None) or exc})") from None
    if not isinstance(body, dict):
        raise CatalogError(location, "must be a YAML mapping with name, model and sources")
    for key in ("name", "model"):
        if not isinstance(body.get(key), str) or not body[key]:
            raise CatalogError(location, f"has no '{key}' (a non-empty string is required)")
    sources = body.get("sources") or {}
    options = body.get("options") or {}
    if not isinstance(sources, dict) or not all(isinstance(v, str) for v in sources.values()):
        raise CatalogError(location, "'sources' must map source names to URIs")
    if not isinstance(options, dict):
        raise CatalogError(location, "'options' must be a mapping")
    name = body["name"]
    check_dataset_name(name, location)
    if expected_name is not None and name != expected_name:
        raise CatalogError(location, f"names dataset {name!r} but its file is named for {expected_name!r}")
    return DatasetEntry(
        name=name,
        model=body["model"],
        sources={str(k): v for k, v in sources.items()},
        options=dict(options),
        description=str(body.get("description") or ""),
        location=location,
    )


def load_entry(catalog: Path, name: str) -> DatasetEntry:
    """The entry for a dataset name; an unknown dataset is a clear error."""
    path = entry_path(catalog, name)
    if not path.is_file():
        known = ", ".join(list_dataset_names(catalog)) or "none"
        raise CatalogError(str(path), f"unknown dataset {name!r}: no catalog entry (known: {known})")
    return parse_entry(path.read_text(), str(path), expected_name=name)


def list_dataset_names(catalog: Path) -> list[str]:
    if not catalog.is_dir():
        return []
    return sorted(p.stem for p in catalog.glob("*.yaml") if p.is_file())


def entry_digest(catalog: Path, name: str) -> str:
    """Changes whenever the entry's file does: the sensor's notion of 'edited'."""
    return hashlib.sha256(entry_path(catalog, name).read_bytes()).hexdigest()[:16]


def sources_version(catalog: Path, name: str, state: MetadataStore) -> str:
    """The data version of a dataset's sources: its entry (options included) and the fingerprint of
    the files it names. Changes when either does; an entry that does not resolve raises SourceError.

    A dataset whose rows are sent to the platform (Flight) has no files: its sources are the uploads
    it received, so its version changes when one of its tables completes an upload."""
    model = load_entry(catalog, name).source_model()
    received = model.received_tables
    sources = f"received-{state.completed_uploads_fingerprint(name, received)}" if received else model.fingerprint()
    return f"{sources}-{entry_digest(catalog, name)}"


def write_entry(catalog: Path, entry: DatasetEntry) -> Path:
    """Write an entry atomically (rename), after checking it parses and its model accepts it."""
    path = entry_path(catalog, entry.name)
    check_dataset_name(entry.name, str(path))
    parsed = parse_entry(entry.as_yaml(), str(path), expected_name=entry.name)
    parsed.source_model()
    catalog.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=catalog, suffix=".tmp", delete=False) as handle:
        handle.write(entry.as_yaml())
    os.replace(handle.name, path)
    return path
