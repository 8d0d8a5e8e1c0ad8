"""The registry over real HTTP (uvicorn on 127.0.0.1): the proposal's sequence end to end, and every refusal."""

from __future__ import annotations

import dataclasses
import datetime as dt
import http.client
import os
from pathlib import Path
from urllib.parse import parse_qs, quote, urlsplit

import httpx
import polars as pl
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa

from connectome_assets.metadata.models import RegistryAudit, RegistryTableVersion
from connectome_assets.registry.client import RegistryClient
from connectome_assets.registry.errors import Forbidden, Invalid, NotFound, QuotaExceeded, Unauthorized, Unavailable
from connectome_assets.registry.file_urls import sign_download
from connectome_assets.registry.schemas import AccessRequest
from connectome_assets.registry.service import Registry, RegistryConfig

from .conftest import SECRET, PathStyleGcs, synapse_table, verify_v4, write_parquet

BODY = {"format": "parquet", "datastack": "manc", "description": "synapses of the male CNS"}


def _audit(registry: Registry) -> list[tuple]:
    with registry.store._session() as session:
        rows = session.scalars(sa.select(RegistryAudit).order_by(RegistryAudit.id)).all()
    return [(r.user_name, r.action, r.outcome, r.status_code) for r in rows]


def _versions(registry: Registry) -> int:
    with registry.store.engine.connect() as connection:
        return connection.scalar(sa.select(sa.func.count()).select_from(RegistryTableVersion))


@pytest.fixture
def published(registry: Registry, objects: Path) -> Path:
    """A hive-partitioned Parquet table, registered and published by an admin."""
    table = synapse_table(5000)
    pq.write_to_dataset(table, str(objects / "manc" / "synapses"), partition_cols=["nt_type"])
    registry.grant("steward", "*", "admin")
    registry.register(registry.principal("steward"), _as_registration(objects / "manc" / "synapses", status="published"))
    return objects / "manc" / "synapses"


def _as_registration(location: Path | str, **fields):
    from connectome_assets.registry.schemas import Registration

    uri = str(location) if "://" in str(location) else f"file://{location}"
    return Registration.model_validate({"name": "manc.synapses", "location": uri} | BODY | fields)


def test_openapi_is_published(served: str) -> None:
    document = httpx.get(f"{served}/openapi.json").json()
    assert {"/v1/tables", "/v1/tables/{name}", "/v1/tables/{name}/access", "/v1/tables/{name}/lineage", "/v1/tables/{name}/status", "/v1/audit"} <= set(
        document["paths"]
    )
    assert "HTTPBearer" in document["components"]["securitySchemes"]
    assert httpx.get(f"{served}/docs").status_code == 200


def test_proposal_sequence_metadata_then_url_then_polars(served: str, registry: Registry, objects: Path) -> None:
    """Register, find, request URLs, and let Polars read the Parquet through them with no other credential."""
    table = synapse_table(20000, seed=3)
    path = write_parquet(objects / "manc" / "synapses.parquet", table, row_group_size=2000)
    writer, reader = registry.create_token("producer", [("manc", "write")]), registry.create_token("analyst", [("manc", "read")])
    with RegistryClient(served, writer) as producer:
        registered = producer.register({"name": "manc.synapses", "location": f"file://{path}", "status": "published", "tags": ["synapses"]} | BODY)
    assert (registered.version, registered.row_count, registered.bytes) == (1, 20000, os.path.getsize(path))
    with RegistryClient(served, reader) as analyst:
        found = analyst.search(datastack="manc", tag="synapses", status="published")
        assert [(v.name, v.version) for v in found] == [("manc.synapses", 1)]
        columns = {c.name: c.type for c in analyst.show("manc.synapses").versions[0].columns}
        assert columns == {"pre_neuron_id": "uint64", "post_neuron_id": "uint64", "weight": "int32", "nt_type": "string"}
        grant = analyst.access("manc.synapses")
    assert len(grant.urls) == 1 and grant.bytes == os.path.getsize(path)
    assert grant.expires_at - dt.datetime.now(dt.timezone.utc) > dt.timedelta(minutes=55)
    url = grant.urls[0].url
    assert url.startswith(served) and "analyst" in url
    strong = pl.scan_parquet(url).filter(pl.col("weight") >= 40).select("pre_neuron_id", "post_neuron_id", "weight").collect()
    expected = table.to_pandas().query("weight >= 40")[["pre_neuron_id", "post_neuron_id", "weight"]].reset_index(drop=True)
    assert strong.height == len(expected) > 0
    assert strong.to_pandas().equals(expected)
    # A range request reads just the footer, as a lazy engine does.
    tail = httpx.get(url, headers={"Range": "bytes=-8"})
    assert tail.status_code == 206 and tail.content == path.read_bytes()[-8:] and tail.content.endswith(b"PAR1")
    assert httpx.head(url).headers["content-length"] == str(os.path.getsize(path))
    assert [a[1:] for a in _audit(registry) if a[0] == "analyst"] == [("token_create", "ok", 201), ("access", "ok", 200)]


def test_partitioned_tables_get_one_url_per_file(served: str, registry: Registry, published: Path) -> None:
    token = registry.create_token("analyst", [("manc", "read")])
    with RegistryClient(served, token) as client:
        version = client.show("manc.synapses").versions[0]
        grant = client.access("manc.synapses", version=1)
    assert version.partition_columns == ["nt_type"] and version.row_count == 5000
    files = sorted(str(p) for p in published.rglob("*.parquet"))
    assert [u.uri for u in grant.urls] == [f"file://{p}" for p in files]
    assert sum(pl.read_parquet(u.url).height for u in grant.urls) == 5000


def test_status_lineage_and_audit_over_http(served: str, registry: Registry, published: Path, objects: Path) -> None:
    token = registry.create_token("producer", [("manc", "write")])
    derived = write_parquet(objects / "manc" / "bottlenecks.parquet", synapse_table(10))
    with RegistryClient(served, token) as client:
        client.register({"name": "manc.bottlenecks", "location": str(derived), "derived_from": ["manc.synapses"]} | BODY)
        assert client.set_status("manc.bottlenecks", 1, "published").status == "published"
        graph = client.lineage("manc.synapses", direction="down")
        assert [(e.child, e.parent) for e in graph.edges] == [("manc.bottlenecks@1", "manc.synapses@1")]
        assert client.set_status("manc.bottlenecks", 1, "deprecated", superseded_by="manc.synapses").superseded_by == "manc.synapses@1"
        assert [e.action for e in client.audit()] == ["status", "status", "register", "token_create"]  # a writer sees their own entries


def test_bad_input_is_refused_and_audited_and_writes_nothing(served: str, registry: Registry, objects: Path, tmp_path: Path) -> None:
    path = write_parquet(objects / "t.parquet", synapse_table(10))
    outside = write_parquet(tmp_path / "outside" / "t.parquet", synapse_table(10))
    token = registry.create_token("producer", [("manc", "write")])
    headers = {"Authorization": f"Bearer {token}"}
    cases = [
        ({"name": "manc.t", "location": str(path), **BODY, "format": "csv"}, 422, "format"),
        ({"name": "manc.t", "location": str(path), **BODY, "colour": "blue"}, 422, "colour"),
        ({"name": "Bad Name!", "location": str(path), **BODY}, 422, "name"),
        ({"name": "manc.t", **BODY}, 422, "location"),
        ({"name": "manc.t", "location": str(outside), **BODY}, 403, "outside the registry's allowed roots"),
        ({"name": "manc.t", "location": str(path), **BODY, "datastack": "flywire"}, 403, "needs write on datastack flywire"),
        ({"name": "manc.t", "location": str(objects / "none.parquet"), **BODY}, 422, "does not exist"),
    ]
    for body, status, words in cases:
        response = httpx.post(f"{served}/v1/tables", json=body, headers=headers)
        assert response.status_code == status, (body, response.text)
        assert words in response.json()["detail"]
    not_json = httpx.post(f"{served}/v1/tables", content=b"{not json", headers=headers | {"content-type": "application/json"})
    assert not_json.status_code == 422
    assert _versions(registry) == 0
    assert _audit(registry)[1:] == [("producer", "register", "refused", s) for _, s, _ in cases] + [("producer", "register", "refused", 422)]


def test_tokens_are_required_and_checked(served: str, registry: Registry, published: Path) -> None:
    expired = registry.create_token("old", [("manc", "read")], expires_in=dt.timedelta(seconds=-5))
    other = registry.create_token("flywire-user", [("flywire", "admin")])
    for headers, status, words in [
        ({}, 401, "missing bearer token"),
        ({"Authorization": "Bearer cr_forged"}, 401, "unknown token"),
        ({"Authorization": f"Bearer {expired}"}, 401, "token expired"),
        ({"Authorization": f"Bearer {other}"}, 403, "needs read on datastack manc"),
    ]:
        response = httpx.post(f"{served}/v1/tables/manc.synapses/access", json={}, headers=headers)
        assert (response.status_code, words in response.json()["detail"]) == (status, True), response.text
    assert [a for a in _audit(registry) if a[1] == "access"] == [
        (None, "access", "refused", 401),
        (None, "access", "refused", 401),
        ("old", "access", "refused", 401),
        ("flywire-user", "access", "refused", 403),
    ]
    with RegistryClient(served, other) as client, pytest.raises(NotFound, match="answered 404: no registered table manc.none"):
        client.show("manc.none")
    with RegistryClient(served, "cr_forged") as client, pytest.raises(Unauthorized):
        client.search()


def test_quota_answers_429(served: str, registry: Registry, published: Path) -> None:
    size = sum(os.path.getsize(p) for p in published.rglob("*.parquet"))
    registry.ensure_user("analyst", daily_byte_quota=size)
    token = registry.create_token("analyst", [("manc", "read")])
    with RegistryClient(served, token) as client:
        client.access("manc.synapses")
        with pytest.raises(QuotaExceeded, match=f"answered 429: daily access quota of {size} bytes"):
            client.access("manc.synapses")


def _raw_get(base: str, raw_path: str) -> int:
    """A request with the path exactly as given (httpx would normalise dot segments away)."""
    parts = urlsplit(base)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    connection.putrequest("GET", raw_path, skip_accept_encoding=True)
    connection.endheaders()
    status = connection.getresponse().status
    connection.close()
    return status


def test_download_route_refuses_traversal_forgery_and_expiry(served: str, registry: Registry, objects: Path, tmp_path: Path) -> None:
    path = write_parquet(objects / "manc" / "t.parquet", synapse_table(10))
    secret_file = tmp_path / "secret.txt"
    secret_file.write_text("not for you")
    registry.ensure_user("analyst")
    registry.ensure_user("mallory")
    later = dt.datetime.now(dt.timezone.utc) + dt.timedelta(minutes=5)
    good = sign_download(served, str(path), "analyst", later, SECRET)
    assert httpx.get(good).content == path.read_bytes()
    query = urlsplit(good).query
    params = {k: v[0] for k, v in parse_qs(query).items()}
    # Path traversal: dot segments (raw and encoded), encoded slashes, empty segments, absolute paths.
    for raw in [
        f"/v1/files{quote(str(objects))}/manc/../../secret.txt?{query}",
        f"/v1/files{quote(str(objects))}/manc/%2e%2e/%2e%2e/secret.txt?{query}",
        f"/v1/files{quote(str(objects))}/manc%2ft.parquet?{query}",
        f"/v1/files{quote(str(objects))}/manc%5ct.parquet?{query}",
        f"/v1/files/{quote(str(secret_file))}?{query}",
    ]:
        assert _raw_get(served, raw) == 400, raw
    # A valid signature for another path, user or expiry does not carry over.
    for url in [
        good.replace("t.parquet", "u.parquet"),
        good.replace("user=analyst", "user=mallory"),
        good.replace(f"expires={params['expires']}", f"expires={int(params['expires']) + 3600}"),
        good.replace(f"sig={params['sig']}", f"sig={'0' * 64}"),
        sign_download(served, str(path), "analyst", later, b"another secret"),
    ]:
        assert httpx.get(url).status_code == 403, url
    expired = sign_download(served, str(path), "analyst", dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=1), SECRET)
    assert httpx.get(expired).status_code == 403 and "expired" in httpx.get(expired).json()["detail"]
    # Signed, but outside the roots, through a symlink, or gone.
    assert httpx.get(sign_download(served, str(secret_file), "analyst", later, SECRET)).status_code == 403
    (objects / "manc" / "link.parquet").symlink_to(secret_file)
    assert httpx.get(sign_download(served, str(objects / "manc" / "link.parquet"), "analyst", later, SECRET)).status_code == 403
    (objects / "linked").symlink_to(tmp_path)
    assert httpx.get(sign_download(served, str(objects / "linked" / "secret.txt"), "analyst", later, SECRET)).status_code == 403
    assert httpx.get(sign_download(served, str(objects / "manc" / "gone.parquet"), "analyst", later, SECRET)).status_code == 404
    (objects / "alias.parquet").symlink_to(path)  # a symlink that stays inside the roots is fine
    assert httpx.get(sign_download(served, str(objects / "alias.parquet"), "analyst", later, SECRET)).content == path.read_bytes()
    registry.disable_user("analyst")
    assert httpx.get(good).status_code == 403
    refused = [a for a in _audit(registry) if a[1] == "download"]
    assert len(refused) == 5 + 5 + 2 + 3 + 1 + 1 and all(a[2] == "refused" for a in refused)


def test_client_errors_name_the_problem(served: str, registry: Registry, objects: Path) -> None:
    token = registry.create_token("producer", [("manc", "write")])
    with RegistryClient(served, token) as client:
        with pytest.raises(Invalid, match="answered 422: .*does not exist"):
            client.register({"name": "manc.t", "location": str(objects / "none.parquet")} | BODY)
        with pytest.raises(Forbidden, match="needs write on datastack other"):
            client.register({"name": "manc.t", "location": str(objects / "none.parquet")} | BODY | {"datastack": "other"})


def test_gcs_tables_get_v4_signed_urls_polars_reads(
    metadata_store, path_style_gcs: PathStyleGcs, key_file: str, private_key, tmp_path: Path
) -> None:
    """gs:// end to end: detection through the emulator, V4 URLs signed with the key (verified here: the emulator
    does not), and Polars reading the rows through them with no other credential."""
    gcs_bucket, endpoint = path_style_gcs.bucket, path_style_gcs.url
    table = synapse_table(3000, seed=5)
    local = write_parquet(tmp_path / "part.parquet", table)
    for key in ("exports/manc v1/synapses/part-0.parquet", "exports/manc v1/synapses/part-1.parquet"):
        gcs_bucket.blob(key).upload_from_filename(str(local))
    config = RegistryConfig(roots=(f"gs://{gcs_bucket.name}/exports",), secret=SECRET, gcs_key_file=key_file, gcs_endpoint=endpoint)
    registry = Registry(metadata_store, config)
    registry.grant("steward", "manc", "write")
    registered = registry.register(
        registry.principal("steward"), _as_registration(f"gs://{gcs_bucket.name}/exports/manc v1/synapses", status="published")
    )
    assert (registered.row_count, registered.bytes, len(registered.files)) == (6000, 2 * os.path.getsize(local), 2)
    grant = registry.issue_access(registry.principal("steward"), "manc.synapses", AccessRequest())
    assert [u.uri for u in grant.urls] == [f"gs://{gcs_bucket.name}/exports/manc v1/synapses/part-{i}.parquet" for i in (0, 1)]
    for signed in grant.urls:
        params = verify_v4(signed.url, private_key.public_key())
        assert int(params["X-Goog-Expires"]) == int(config.url_ttl.total_seconds())
        assert signed.url.startswith(f"{endpoint}/{gcs_bucket.name}/exports/manc%20v1/synapses/")
    rows = pl.concat([pl.read_parquet(u.url) for u in grant.urls])
    assert rows.height == 6000 and rows["weight"].sum() == 2 * pc.sum(table["weight"]).as_py()
    with pytest.raises(Forbidden, match="outside the registry's allowed roots"):
        registry.register(registry.principal("steward"), _as_registration(f"gs://{gcs_bucket.name}/elsewhere/x.parquet"))
    # A registry that cannot sign says so (503), and charges nothing.
    unsigned = Registry(metadata_store, dataclasses.replace(config, gcs_key_file=str(tmp_path / "missing-key.json")))
    with pytest.raises(Unavailable, match="cannot sign gs:// URLs: GCS signing key file .*missing-key.json does not exist"):
        unsigned.issue_access(unsigned.principal("steward"), "manc.synapses", AccessRequest())
    assert [a[1:] for a in _audit(registry) if a[1] == "access"] == [("access", "ok", 200), ("access", "refused", 503)]
