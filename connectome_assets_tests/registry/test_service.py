"""The registry service on SQLite and PostgreSQL: registration, versions, status, search, lineage, auth, quota, audit."""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
from pathlib import Path

import pytest
import sqlalchemy as sa

from connectome_assets.metadata.models import RegistryAudit, RegistryTableVersion, RegistryToken, RegistryUsage
from connectome_assets.registry.errors import Conflict, Forbidden, Invalid, NotFound, QuotaExceeded, Unauthorized, Unavailable
from connectome_assets.registry.schemas import AccessRequest, Registration, StatusChange
from connectome_assets.registry.service import Audit, Registry

from .conftest import synapse_table, write_parquet

FULL_FIELDS = {
    "aligned_volume": "manc_v1.2",
    "snapshot_at": "2026-10-01T12:00:00+00:00",
    "valid_from": "2026-09-01T00:00:00+00:00",
    "valid_to": "2026-10-01T00:00:00+00:00",
    "materialization_version": "943",
    "owner_team": "connectomics",
    "owner_person": "a.scientist",
    "invalidation_radius_nm": 500.0,
    "license": "CC-BY-4.0",
    "usage_constraints": "cite the release paper",
    "retention_days": 365,
    "citation": "Takemura et al. 2024",
    "annotation_refs": [{"table": "synapses_v2", "column": "id"}, {"table": "nucleus_detection_v0", "column": None}],
    "tags": ["synapses", "release"],
    "produced_by": "connectome_assets 0.1.0",
    "partition_columns": [],
    "hash_function": "murmurhash3_x86_128",
}


def _registration(name: str, location: Path | str, **fields) -> Registration:
    body = {"name": name, "location": str(location), "format": "parquet", "datastack": "manc", "description": f"{name} table"} | fields
    return Registration.model_validate(body)


def _admin(registry: Registry):
    registry.grant("admin", "*", "admin")
    return registry.principal("admin")


def _versions(registry: Registry) -> int:
    with registry.store.engine.connect() as connection:
        return connection.scalar(sa.select(sa.func.count()).select_from(RegistryTableVersion))


def _refusals(registry: Registry, action: str) -> list[RegistryAudit]:
    with registry.store._session() as session:
        return list(session.scalars(sa.select(RegistryAudit).where(RegistryAudit.action == action, RegistryAudit.outcome == "refused")))


def test_registration_detects_and_records_every_field(registry: Registry, objects: Path) -> None:
    path = write_parquet(objects / "manc" / "synapses.parquet", synapse_table(1000))
    schema = [{"name": "weight", "type": "int32", "description": "synapse count"}, {"name": "pre_neuron_id", "type": "uint64"}]
    schema += [{"name": "post_neuron_id", "type": "uint64"}, {"name": "nt_type", "type": "utf8"}]
    version = registry.register(_admin(registry), _registration("manc.synapses", f"file://{path}", schema=schema, **FULL_FIELDS))
    assert (version.name, version.version, version.status, version.schema_source) == ("manc.synapses", 1, "draft", "detected")
    # The detected schema in data order, with the declared descriptions.
    assert [(c.name, c.type, c.description) for c in version.columns] == [
        ("pre_neuron_id", "uint64", ""),
        ("post_neuron_id", "uint64", ""),
        ("weight", "int32", "synapse count"),
        ("nt_type", "string", ""),
    ]
    assert (version.row_count, version.bytes) == (1000, os.path.getsize(path))
    assert [(f.uri, f.bytes, f.rows) for f in version.files] == [(f"file://{path}", os.path.getsize(path), 1000)]
    dumped = version.model_dump(mode="json")
    for key, value in FULL_FIELDS.items():
        if key.endswith(("_at", "_from", "_to")):
            assert dt.datetime.fromisoformat(dumped[key]) == dt.datetime.fromisoformat(value), key
        else:
            assert dumped[key] == (sorted(value) if key == "tags" else value), key
    assert version.location == f"file://{path}" and version.registered_by == "admin"


def test_versions_publish_and_supersede(registry: Registry, objects: Path) -> None:
    admin = _admin(registry)
    first = write_parquet(objects / "v1" / "t.parquet", synapse_table(10, seed=1))
    second = write_parquet(objects / "v2" / "t.parquet", synapse_table(20, seed=2))
    v1 = registry.register(admin, _registration("manc.t", first, status="published"))
    v2 = registry.register(admin, _registration("manc.t", second, status="published"))
    info = registry.show(admin, "manc.t")
    assert info.current == 2 and [v.version for v in info.versions] == [2, 1]
    old = info.versions[1]
    assert (v1.status, old.status, old.superseded_by, v2.status) == ("published", "deprecated", "manc.t@2", "published")
    # A draft, then published through the status route, supersedes version 2.
    v3 = registry.register(admin, _registration("manc.t", first))
    assert v3.status == "draft" and registry.show(admin, "manc.t").current == 2
    registry.set_status(admin, "manc.t", StatusChange(version=3, status="published"))
    assert [(v.version, v.status, v.superseded_by) for v in registry.show(admin, "manc.t").versions] == [
        (3, "published", None),
        (2, "deprecated", "manc.t@3"),
        (1, "deprecated", "manc.t@2"),
    ]
    # Never backwards, and at most one published version, enforced by the database too.
    with pytest.raises(Conflict, match="deprecated; it cannot become published"):
        registry.set_status(admin, "manc.t", StatusChange(version=1, status="published"))
    with registry.store.engine.connect() as connection, pytest.raises(sa.exc.IntegrityError):
        connection.execute(sa.update(RegistryTableVersion).where(RegistryTableVersion.version == 2).values(status="published"))
    deprecated = registry.set_status(admin, "manc.t", StatusChange(version=3, status="deprecated", superseded_by="manc.t@1"))
    assert (deprecated.status, deprecated.superseded_by) == ("deprecated", "manc.t@1")
    assert registry.show(admin, "manc.t").current is None
    with pytest.raises(Conflict, match="has no published version"):
        registry.issue_access(admin, "manc.t", AccessRequest())


def test_a_declared_schema_that_disagrees_is_refused_with_the_column_diff(registry: Registry, objects: Path) -> None:
    path = write_parquet(objects / "t.parquet", synapse_table(10))
    schema = [{"name": "pre_neuron_id", "type": "int64"}, {"name": "post_neuron_id", "type": "uint64"}, {"name": "soma_distance", "type": "double"}]
    with pytest.raises(Invalid, match="declared schema disagrees") as refused:
        registry.register(_admin(registry), _registration("manc.t", path, schema=schema))
    assert refused.value.detail["column_diff"] == [
        {"column": "pre_neuron_id", "problem": "type", "declared": "int64", "detected": "uint64"},
        {"column": "soma_distance", "problem": "missing", "declared": "double", "detected": None},
        {"column": "weight", "problem": "undeclared", "declared": None, "detected": "int32"},
        {"column": "nt_type", "problem": "undeclared", "declared": None, "detected": "string"},
    ]
    assert _versions(registry) == 0
    assert [a.table_name for a in _refusals(registry, "register")] == ["manc.t"]


def test_formats_without_a_reader_record_the_declared_schema(registry: Registry, objects: Path) -> None:
    (objects / "emb.lance" / "data").mkdir(parents=True)
    (objects / "emb.lance" / "data" / "0.lance").write_bytes(b"x" * 100)
    admin = _admin(registry)
    with pytest.raises(Invalid, match="not supported for detection.*declare the table's `schema`"):
        registry.register(admin, _registration("manc.emb", objects / "emb.lance", format="lance"))
    version = registry.register(
        admin, _registration("manc.emb", objects / "emb.lance", format="lance", schema=[{"name": "embedding", "type": "list<item: float>"}])
    )
    assert (version.schema_source, version.bytes, version.row_count) == ("declared", 100, None)
    assert "not supported for detection" in version.schema_note
    assert [(c.name, c.type) for c in version.columns] == [("embedding", "list<item: float>")]


def test_locations_outside_the_roots_and_symlinks_out_of_them_are_refused(registry: Registry, objects: Path, tmp_path: Path) -> None:
    outside = write_parquet(tmp_path / "elsewhere" / "t.parquet", synapse_table(5))
    admin = _admin(registry)
    with pytest.raises(Forbidden, match="outside the registry's allowed roots"):
        registry.register(admin, _registration("manc.t", outside))
    (objects / "link.parquet").symlink_to(outside)
    with pytest.raises(Forbidden, match="outside the registry's allowed roots"):
        registry.register(admin, _registration("manc.t", objects / "link.parquet"))
    (objects / "dir").mkdir()
    (objects / "dir" / "part-0.parquet").symlink_to(outside)
    with pytest.raises(Forbidden, match="data file .* outside"):
        registry.register(admin, _registration("manc.t", objects / "dir"))
    with pytest.raises(Invalid, match=r"'\.' or '\.\.' segments"):
        registry.register(admin, _registration("manc.t", f"{objects}/../elsewhere/t.parquet"))
    with pytest.raises(Invalid, match="does not exist"):
        registry.register(admin, _registration("manc.t", objects / "missing.parquet"))
    assert _versions(registry) == 0
    assert len(_refusals(registry, "register")) == 5


def test_grants_decide_who_registers_and_reads(registry: Registry, objects: Path) -> None:
    path = write_parquet(objects / "t.parquet", synapse_table(5))
    registry.grant("writer", "manc", "write")
    registry.grant("reader", "manc", "read")
    registry.add_to_group("member", "flywire-team")
    registry.grant_group("flywire-team", "flywire", "write")
    registry.register(registry.principal("writer"), _registration("manc.t", path, status="published"))
    with pytest.raises(Forbidden, match="user reader needs write on datastack manc"):
        registry.register(registry.principal("reader"), _registration("manc.u", path))
    with pytest.raises(Forbidden, match="needs read on datastack manc"):
        registry.show(registry.principal("member"), "manc.t")
    assert registry.register(registry.principal("member"), _registration("flywire.t", path, datastack="flywire")).version == 1
    with pytest.raises(Conflict, match="belongs to datastack flywire"):
        registry.register(_admin(registry), _registration("flywire.t", path, datastack="manc"))
    # Search shows only readable datastacks; asking for another one is refused.
    assert [v.name for v in registry.search(registry.principal("reader"))] == ["manc.t"]
    assert [v.name for v in registry.search(registry.principal("member"))] == ["flywire.t"]
    with pytest.raises(Forbidden):
        registry.search(registry.principal("reader"), datastack="flywire")
    with pytest.raises(NotFound, match="no registered table manc.nope"):
        registry.show(registry.principal("reader"), "manc.nope")


def test_search_filters(registry: Registry, objects: Path) -> None:
    admin = _admin(registry)
    path = write_parquet(objects / "t.parquet", synapse_table(5))
    registry.register(admin, _registration("manc.synapses", path, tags=["synapses"], materialization_version="1", status="published"))
    registry.register(admin, _registration("manc.synapses", path, tags=["synapses"], materialization_version="2"))
    registry.register(admin, _registration("manc.soma", path, description="nucleus features of 100% of somas", tags=["soma"]))
    registry.register(admin, _registration("fw.synapses", path, datastack="flywire", tags=["synapses"]))

    def names(**filters) -> list[str]:
        return [f"{v.name}@{v.version}" for v in registry.search(admin, **filters)]

    assert names() == ["fw.synapses@1", "manc.soma@1", "manc.synapses@2", "manc.synapses@1"]
    assert names(datastack="manc", tag="synapses") == ["manc.synapses@2", "manc.synapses@1"]
    assert names(status="published") == ["manc.synapses@1"]
    assert names(materialization_version="2") == ["manc.synapses@2"]
    assert names(text="NUCLEUS") == ["manc.soma@1"]
    assert names(text="100%") == ["manc.soma@1"]
    assert names(text="_1") == []  # '_' is matched literally, not as a wildcard
    assert names(limit=2, offset=1) == ["manc.soma@1", "manc.synapses@2"]
    # Search results stay small: file lists (thousands of shards for a volume) only come with `show`.
    assert {(v.files, v.file_count) for v in registry.search(admin)} == {(None, 1)}
    assert [len(v.files) for v in registry.show(admin, "manc.soma").versions] == [1]


def test_lineage_up_and_down(registry: Registry, objects: Path) -> None:
    admin = _admin(registry)
    path = write_parquet(objects / "t.parquet", synapse_table(5))
    registry.register(admin, _registration("manc.neurons", path, derived_from=["file:///releases/manc/neurons.feather"], status="published"))
    registry.register(admin, _registration("manc.synapses", path, derived_from=["gs://releases/manc/weights.feather"], status="published"))
    registry.register(admin, _registration("manc.bottlenecks", path, derived_from=["manc.neurons", "manc.synapses@1"], status="published"))
    registry.register(admin, _registration("fw.matched", path, datastack="flywire", derived_from=["manc.bottlenecks"]))
    up = registry.lineage(admin, "manc.bottlenecks", direction="up")
    assert up.root == "manc.bottlenecks@1"
    assert [(e.child, e.parent) for e in up.edges] == [
        ("manc.bottlenecks@1", "manc.neurons@1"),
        ("manc.bottlenecks@1", "manc.synapses@1"),
        ("manc.neurons@1", "file:///releases/manc/neurons.feather"),
        ("manc.synapses@1", "gs://releases/manc/weights.feather"),
    ]
    down = registry.lineage(admin, "manc.neurons", direction="down")
    assert [(e.child, e.parent) for e in down.edges] == [("fw.matched@1", "manc.bottlenecks@1"), ("manc.bottlenecks@1", "manc.neurons@1")]
    assert registry.lineage(admin, "manc.neurons", direction="down", depth=1).edges[0].child == "manc.bottlenecks@1"
    assert len(registry.lineage(admin, "manc.neurons", direction="down", depth=1).edges) == 1
    assert registry.show(admin, "manc.bottlenecks").versions[0].derived_from == ["manc.neurons@1", "manc.synapses@1"]
    # A reader of manc only does not see the flywire table derived from it.
    registry.grant("reader", "manc", "read")
    hidden = registry.lineage(registry.principal("reader"), "manc.neurons", direction="down")
    assert hidden.hidden == 1 and [n.ref for n in hidden.nodes] == ["manc.bottlenecks@1", "manc.neurons@1"]
    with pytest.raises(NotFound, match="no registered table manc.nope"):
        registry.register(admin, _registration("manc.x", path, derived_from=["manc.nope"]))


def test_tokens_are_stored_hashed_and_checked(registry: Registry) -> None:
    token = registry.create_token("alice", [("manc", "read")])
    with registry.store._session() as session:
        stored = session.scalars(sa.select(RegistryToken.token_hash)).all()
    assert token not in stored and len(stored) == 1
    who = registry.authenticate(f"Bearer {token}", Audit("test"))
    assert who.name == "alice" and who.level("manc") == 1 and who.level("flywire") == 0
    for header, message in [
        (None, "missing bearer token"),
        ("Basic abc", "missing bearer token"),
        (f"Bearer {token}x", "unknown token"),
    ]:
        with pytest.raises(Unauthorized, match=message):
            registry.authenticate(header, Audit("test"))
    expired = registry.create_token("bob", expires_in=dt.timedelta(seconds=-1))
    with pytest.raises(Unauthorized, match="token expired"):
        registry.authenticate(f"Bearer {expired}", Audit("test"))
    registry.revoke_token(token)
    with pytest.raises(Unauthorized, match="revoked"):
        registry.authenticate(f"Bearer {token}", Audit("test"))
    refused = _refusals(registry, "test")
    assert [(a.user_name, a.status_code) for a in refused] == [(None, 401), (None, 401), (None, 401), ("bob", 401), ("alice", 401)]


def test_access_is_charged_to_a_daily_quota(registry: Registry, objects: Path) -> None:
    admin = _admin(registry)
    path = write_parquet(objects / "t.parquet", synapse_table(100))
    size = os.path.getsize(path)
    registry.register(admin, _registration("manc.t", path, status="published"))
    registry.ensure_user("alice", daily_byte_quota=2 * size + 1)
    registry.grant("alice", "manc", "read")
    alice = registry.principal("alice")
    for _ in range(2):
        grant = registry.issue_access(alice, "manc.t", AccessRequest())
        assert grant.bytes == size and len(grant.urls) == 1 and grant.urls[0].url.startswith("http://127.0.0.1:8765/v1/files/")
    with pytest.raises(QuotaExceeded, match=f"{2 * size} bytes granted today, this access needs {size}") as refused:
        registry.issue_access(alice, "manc.t", AccessRequest())
    assert refused.value.detail == {"quota": 2 * size + 1, "used": 2 * size, "requested": size}
    with registry.store._session() as session:
        assert session.scalars(sa.select(RegistryUsage.bytes)).all() == [2 * size]
        entries = session.scalars(sa.select(RegistryAudit).where(RegistryAudit.action == "access").order_by(RegistryAudit.id)).all()
    assert [(e.outcome, e.status_code, e.bytes) for e in entries] == [("ok", 200, size), ("ok", 200, size), ("refused", 429, None)]
    # Another user has their own quota.
    registry.grant("bob", "manc", "read")
    assert registry.issue_access(registry.principal("bob"), "manc.t", AccessRequest(version=1)).version == 1


def test_audit_log_visibility(registry: Registry, objects: Path) -> None:
    admin = _admin(registry)
    path = write_parquet(objects / "t.parquet", synapse_table(5))
    registry.register(admin, _registration("manc.t", path, status="published"))
    registry.grant("alice", "manc", "read")
    registry.issue_access(registry.principal("alice"), "manc.t", AccessRequest())
    registry.grant("steward", "manc", "admin")
    assert [e.action for e in registry.audit_log(admin)][:2] == ["access", "register"]
    assert [(e.user, e.action) for e in registry.audit_log(registry.principal("alice"))] == [("alice", "access")]
    assert {e.action for e in registry.audit_log(registry.principal("steward"))} == {"access", "register"}
    assert [e.user for e in registry.audit_log(admin, action="access")] == ["alice"]


def test_a_registry_without_a_download_key_registers_but_never_signs(registry: Registry, objects: Path) -> None:
    """Dagster's in-process registry has no download key: it registers, and refuses to hand out file URLs."""
    keyless = Registry(registry.store, dataclasses.replace(registry.config, secret=b""))
    admin = _admin(keyless)
    keyless.register(admin, _registration("manc.t", write_parquet(objects / "t.parquet", synapse_table(5)), status="published"))
    with pytest.raises(Unavailable, match="no download key to sign file:// URLs"):
        keyless.issue_access(admin, "manc.t", AccessRequest())
    with pytest.raises(Unavailable, match="no download key to check download URLs"):
        keyless.download_path(str(objects / "t.parquet"), "admin", "9999999999", "0" * 64)
    with registry.store._session() as session:
        assert session.scalars(sa.select(RegistryUsage)).all() == []
