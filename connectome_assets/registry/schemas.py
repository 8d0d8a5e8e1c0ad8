"""The registry's request and response documents, shared by the service, the HTTP API and the client.

Requests refuse unknown fields (`extra="forbid"`): a misspelt optional field is an error, not a
silently dropped value. The JSON field `schema` is `declared_schema` / `columns` in Python because
pydantic reserves the attribute name.
"""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

TABLE_NAME = r"^[a-z0-9][a-z0-9_.\-]{0,127}$"
DATASTACK = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$"
Format = Literal["parquet", "delta", "lance", "iceberg", "neuroglancer_precomputed"]
Status = Literal["draft", "published", "deprecated"]
Level = Literal["read", "write", "admin"]


def validation_problems(errors: list[dict]) -> str:
    """Pydantic's validation errors as one line: `field.sub: message; …` (the first ten)."""
    return "; ".join(f"{'.'.join(str(p) for p in e['loc'] if p != 'body')}: {e['msg']}" for e in errors[:10])


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class _Document(BaseModel):
    model_config = ConfigDict(populate_by_name=True)


class ColumnSpec(_Request):
    name: str = Field(min_length=1, max_length=256)
    type: str = Field(min_length=1, max_length=256, description="Arrow type, e.g. int64, string, double, list<item: float>")
    description: str = ""


class AnnotationRef(_Request):
    table: str = Field(min_length=1, max_length=256)
    column: str | None = Field(default=None, max_length=256)


class Registration(_Request):
    """`POST /v1/tables`: register a new version of a table name."""

    name: str = Field(pattern=TABLE_NAME, description="Table name (lower case, digits, '_', '-', '.'); a name has versions.")
    location: str = Field(min_length=1, max_length=4096, description="file:///abs/path or gs://bucket/prefix (a file or a folder).")
    format: Format
    datastack: str = Field(pattern=DATASTACK)
    description: str = Field(max_length=20000)
    declared_schema: list[ColumnSpec] | None = Field(default=None, alias="schema", description="Optional; checked against the data.")
    aligned_volume: str | None = Field(default=None, max_length=128)
    snapshot_at: dt.datetime | None = None
    valid_from: dt.datetime | None = None
    valid_to: dt.datetime | None = None
    materialization_version: str | None = Field(default=None, max_length=128)
    owner_team: str | None = Field(default=None, max_length=128)
    owner_person: str | None = Field(default=None, max_length=128)
    invalidation_radius_nm: float | None = Field(default=None, ge=0)
    license: str | None = Field(default=None, max_length=4000)
    usage_constraints: str | None = Field(default=None, max_length=4000)
    retention_days: int | None = Field(default=None, ge=1)
    citation: str | None = Field(default=None, max_length=4000)
    annotation_refs: list[AnnotationRef] = Field(default_factory=list)
    tags: list[str] = Field(default_factory=list, max_length=64)
    produced_by: str | None = Field(default=None, max_length=256, description="Producing pipeline or model version.")
    status: Literal["draft", "published"] = "draft"
    derived_from: list[str] = Field(
        default_factory=list, max_length=256, description="Registered tables (`name` = its current version, `name@3`) or URIs of unregistered sources."
    )
    partition_columns: list[str] = Field(default_factory=list)
    hash_function: str | None = Field(default=None, max_length=64)

    @field_validator("materialization_version", mode="before")
    @classmethod
    def _version_as_text(cls, value: object) -> object:
        # CAVE materialization versions are integers; they are recorded as text like any other version.
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


class StatusChange(_Request):
    """`POST /v1/tables/{name}/status`."""

    version: int = Field(ge=1)
    status: Literal["published", "deprecated"]
    superseded_by: str | None = Field(default=None, description="`name` or `name@version` of the replacement (deprecation only).")


class AccessRequest(_Request):
    """`POST /v1/tables/{name}/access`: the current published version unless `version` is given."""

    version: int | None = Field(default=None, ge=1)


class DataFileOut(_Document):
    uri: str
    bytes: int
    rows: int | None


class TableVersion(_Document):
    name: str
    version: int
    status: Status
    description: str
    location: str
    format: Format
    columns: list[ColumnSpec] | None = Field(serialization_alias="schema", validation_alias="schema")
    schema_source: Literal["detected", "declared"]
    schema_note: str
    volume: dict | None
    datastack: str
    aligned_volume: str | None
    snapshot_at: dt.datetime | None
    valid_from: dt.datetime | None
    valid_to: dt.datetime | None
    materialization_version: str | None
    owner_team: str | None
    owner_person: str | None
    invalidation_radius_nm: float | None
    license: str | None
    usage_constraints: str | None
    retention_days: int | None
    citation: str | None
    annotation_refs: list[AnnotationRef]
    tags: list[str]
    produced_by: str | None
    derived_from: list[str]
    superseded_by: str | None
    partition_columns: list[str]
    hash_function: str | None
    bytes: int
    row_count: int | None
    file_count: int
    files: list[DataFileOut] | None = Field(description="Every data file (show, register, status); null in search results, which stay small for volumes of many shards.")
    registered_by: str
    registered_at: dt.datetime
    status_changed_at: dt.datetime


class TableInfo(_Document):
    """A table name: its current published version (if any) and every version, newest first."""

    name: str
    datastack: str
    current: int | None
    versions: list[TableVersion]


class LineageNode(_Document):
    ref: str  # `name@version`, or the URI of data outside the registry
    name: str | None
    version: int | None
    status: Status | None
    location: str | None


class LineageEdge(_Document):
    child: str
    parent: str


class Lineage(_Document):
    root: str
    nodes: list[LineageNode]
    edges: list[LineageEdge]
    hidden: int = Field(description="Versions reached but left out because the caller has no read grant on their datastack.")


class SignedFile(_Document):
    url: str
    expires_at: dt.datetime
    uri: str
    bytes: int


class AccessGrant(_Document):
    name: str
    version: int
    format: Format
    bytes: int
    expires_at: dt.datetime
    urls: list[SignedFile]


class AuditEntry(_Document):
    at: dt.datetime
    user: str | None
    action: str
    outcome: Literal["ok", "refused"]
    status_code: int
    table_name: str | None
    table_version: int | None
    datastack: str | None
    bytes: int | None
    detail: str
    client: str | None
