"""A registry on the metadata database (SQLite and PostgreSQL), its objects root, and a served API."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, quote, urlsplit

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from connectome_assets.metadata.store import MetadataStore
from connectome_assets.registry.service import Registry, RegistryConfig

SECRET = b"test-secret-0123456789abcdef"
EMAIL = "registry-signer@test-project.iam.gserviceaccount.com"


@pytest.fixture
def objects(tmp_path: Path) -> Path:
    """The allowed root of local data."""
    root = tmp_path / "objects"
    root.mkdir()
    return root


@pytest.fixture
def registry(metadata_store: MetadataStore, objects: Path) -> Registry:
    return Registry(metadata_store, RegistryConfig(roots=(f"file://{objects}",), secret=SECRET))


def synapse_table(rows: int = 1000, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    return pa.table(
        {
            "pre_neuron_id": pa.array(rng.integers(1, 10**9, rows), pa.uint64()),
            "post_neuron_id": pa.array(rng.integers(1, 10**9, rows), pa.uint64()),
            "weight": pa.array(rng.integers(1, 50, rows), pa.int32()),
            "nt_type": pa.array(rng.choice(["gaba", "ach", "glut", "5 ht"], rows)),  # a space: "nt_type=5%20ht" on disk
        }
    )


def write_parquet(path: Path, table: pa.Table, row_group_size: int = 256) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path, row_group_size=row_group_size)
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def served(registry: Registry) -> Iterator[str]:
    """The registry's API served by uvicorn on 127.0.0.1 (a real HTTP server, in a thread)."""
    import uvicorn

    from connectome_assets.registry.api import create_app

    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(registry), host="127.0.0.1", port=port, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            pytest.fail("the registry API did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


# GCS V4 signing: a generated service-account key, the emulator serving path-style URLs, a verifier.
@pytest.fixture(scope="session")
def private_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def key_file(tmp_path: Path, private_key: rsa.RSAPrivateKey) -> str:
    pem = private_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
    info = {
        "type": "service_account",
        "project_id": "test-project",
        "private_key_id": "0123456789abcdef",
        "private_key": pem,
        "client_email": EMAIL,
        "client_id": "123456789012345678901",
        "token_uri": "https://oauth2.googleapis.com/token",
    }
    path = tmp_path / "signer.json"
    path.write_text(json.dumps(info))
    return str(path)


@dataclass(frozen=True)
class PathStyleGcs:
    url: str
    bucket: object  # a google.cloud.storage Bucket on this emulator


@pytest.fixture
def path_style_gcs(fake_gcs: str) -> Iterator[PathStyleGcs]:
    """A fake-gcs-server of the test's own that serves path-style `/{bucket}/{object}` URLs on 127.0.0.1.

    The emulator answers path-style requests only on its public host (storage.googleapis.com unless told
    otherwise). It gets a server of its own: the session's emulator keeps the default, which the
    Delta-on-GCS route relies on.
    """
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    from connectome_assets_tests.fake_gcs import FakeGcs

    server = FakeGcs(public_host="127.0.0.1")
    os.environ["STORAGE_EMULATOR_HOST"] = server.url  # this test's clients talk to this server
    try:
        bucket = storage.Client(project="test", credentials=AnonymousCredentials()).create_bucket(f"p-{uuid.uuid4().hex[:10]}")
        yield PathStyleGcs(server.url, bucket)
    finally:
        server.stop()
        os.environ["STORAGE_EMULATOR_HOST"] = fake_gcs


def verify_v4(url: str, public_key: rsa.RSAPublicKey) -> dict[str, str]:
    """The URL's query parameters if its X-Goog-Signature is valid for GET with only `host` signed; raises otherwise."""
    parts = urlsplit(url)
    params = dict(parse_qsl(parts.query, keep_blank_values=True, strict_parsing=True))
    signature = bytes.fromhex(params.pop("X-Goog-Signature"))
    assert params["X-Goog-Algorithm"] == "GOOG4-RSA-SHA256" and params["X-Goog-SignedHeaders"] == "host"

    def enc(text: str) -> str:  # RFC 3986: only unreserved characters stay as they are
        return quote(text, safe="-_.~")

    canonical_query = "&".join(sorted(f"{enc(k)}={enc(v)}" for k, v in params.items()))
    canonical_request = f"GET\n{parts.path}\n{canonical_query}\nhost:{parts.netloc}\n\nhost\nUNSIGNED-PAYLOAD"
    scope = params["X-Goog-Credential"].split("/", 1)[1]
    string_to_sign = f"GOOG4-RSA-SHA256\n{params['X-Goog-Date']}\n{scope}\n{hashlib.sha256(canonical_request.encode()).hexdigest()}"
    public_key.verify(signature, string_to_sign.encode(), padding.PKCS1v15(), hashes.SHA256())
    return params
