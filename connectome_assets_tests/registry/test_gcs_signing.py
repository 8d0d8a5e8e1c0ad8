"""GCS V4 signed URLs: checked by an independent verifier here, then fetched from fake-gcs-server.

fake-gcs-server serves signed URLs without checking their signatures, so the signature is verified
in this module from the specification (canonical request, string to sign, RSA PKCS#1 v1.5 SHA-256).
"""

from __future__ import annotations

import datetime as dt
import io
import json
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

import httpx
import polars as pl
import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import rsa

from connectome_assets.registry.gcs_signing import GcsSigner

from .conftest import EMAIL, PathStyleGcs, verify_v4

NOW = dt.datetime(2031, 5, 4, 12, 34, 56, 789000, tzinfo=dt.timezone.utc)
URI = "gs://connectome-data/exports/ds 1/neurons.parquet"


def test_signed_url_carries_a_valid_v4_signature(key_file: str, private_key: rsa.RSAPrivateKey) -> None:
    signed = GcsSigner(key_file).sign(URI, dt.timedelta(minutes=15), now=NOW)

    params = verify_v4(signed.url, private_key.public_key())
    parts = urlsplit(signed.url)
    assert f"{parts.scheme}://{parts.netloc}" == "https://storage.googleapis.com"
    assert parts.path == "/connectome-data/exports/ds%201/neurons.parquet"
    assert params["X-Goog-Credential"] == f"{EMAIL}/20310504/auto/storage/goog4_request"
    assert params["X-Goog-Expires"] == "900"
    assert params["X-Goog-Date"] == "20310504T123456Z"
    assert signed.expires_at == dt.datetime(2031, 5, 4, 12, 49, 56, tzinfo=dt.timezone.utc)


def test_now_in_another_zone_is_signed_in_utc(key_file: str, private_key: rsa.RSAPrivateKey) -> None:
    paris = NOW.astimezone(dt.timezone(dt.timedelta(hours=2)))
    signed = GcsSigner(key_file).sign(URI, dt.timedelta(days=7), now=paris)

    params = verify_v4(signed.url, private_key.public_key())
    assert params["X-Goog-Date"] == "20310504T123456Z" and params["X-Goog-Expires"] == str(7 * 86400)
    assert signed.expires_at.utcoffset() == dt.timedelta(0)


@pytest.mark.parametrize("name", ["a+b/c%d e.parquet", "part?x=1#frag.parquet", "données/ünïcode ✓.parquet", "~tilde/(paren)'s*.parquet"])
def test_object_names_are_percent_encoded_with_slashes_kept(key_file: str, private_key: rsa.RSAPrivateKey, name: str) -> None:
    signed = GcsSigner(key_file).sign(f"gs://bucket/{name}", dt.timedelta(hours=1), now=NOW)

    verify_v4(signed.url, private_key.public_key())
    path = urlsplit(signed.url).path
    assert unquote(path) == f"/bucket/{name}"
    assert set(path) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.~/%")
    assert path.count("/") == 2 + name.count("/")


def _flip_last_signature_digit(url: str) -> str:
    return url[:-1] + ("0" if url[-1] != "0" else "1")


@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param(lambda url: url.replace("neurons.parquet", "synapses.parquet"), id="object-name"),
        pytest.param(lambda url: url.replace("/connectome-data/", "/other-bucket/"), id="bucket"),
        pytest.param(lambda url: url.replace("X-Goog-Expires=900", "X-Goog-Expires=604800"), id="expiry"),
        pytest.param(lambda url: url.replace("X-Goog-Date=20310504T123456Z", "X-Goog-Date=20310505T123456Z"), id="date"),
        pytest.param(lambda url: url.replace("https://storage.googleapis.com", "https://evil.example.com"), id="host"),
        pytest.param(_flip_last_signature_digit, id="signature"),
    ],
)
def test_tampered_urls_fail_verification(key_file: str, private_key: rsa.RSAPrivateKey, tamper: Callable[[str], str]) -> None:
    url = GcsSigner(key_file).sign(URI, dt.timedelta(minutes=15), now=NOW).url
    verify_v4(url, private_key.public_key())

    tampered = tamper(url)
    assert tampered != url
    with pytest.raises(InvalidSignature):
        verify_v4(tampered, private_key.public_key())


def test_a_url_signed_by_another_key_fails_verification(key_file: str) -> None:
    url = GcsSigner(key_file).sign(URI, dt.timedelta(minutes=15), now=NOW).url
    with pytest.raises(InvalidSignature):
        verify_v4(url, rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key())


@pytest.mark.parametrize("key", ["exports/ds 1/neurons.parquet", "odd/a+b c%d? #ünï ✓.parquet"])
def test_signed_url_reads_the_object_from_the_emulator(
    path_style_gcs: PathStyleGcs, key_file: str, private_key: rsa.RSAPrivateKey, key: str
) -> None:
    gcs_bucket, endpoint = path_style_gcs.bucket, path_style_gcs.url
    frame = pl.DataFrame({"neuron_id": [720575940000000001, 720575940000000002, 720575940000000003], "cell_type": ["KC", "MBON", "DAN"]})
    buffer = io.BytesIO()
    frame.write_parquet(buffer)
    payload = buffer.getvalue()
    gcs_bucket.blob(key).upload_from_string(payload, content_type="application/octet-stream")

    signer = GcsSigner(key_file, endpoint=endpoint)
    signed = signer.sign(f"gs://{gcs_bucket.name}/{key}", dt.timedelta(minutes=10))
    verify_v4(signed.url, private_key.public_key())
    assert signed.url.startswith(f"{endpoint}/{gcs_bucket.name}/{quote(key)}?")

    response = httpx.get(signed.url)
    assert response.status_code == 200 and response.content == payload
    assert pl.read_parquet(signed.url).equals(frame)
    assert pl.scan_parquet(signed.url).filter(pl.col("cell_type") == "MBON").collect()["neuron_id"].to_list() == [720575940000000002]


@pytest.mark.parametrize(
    "uri", ["s3://bucket/key", "/local/file.parquet", "file:///local/file.parquet", "gs://bucket", "gs://bucket/", "gs:///key", "bucket/key"]
)
def test_only_gcs_object_uris_are_signed(key_file: str, uri: str) -> None:
    with pytest.raises(ValueError, match="cannot sign") as raised:
        GcsSigner(key_file).sign(uri, dt.timedelta(minutes=5))
    assert uri in str(raised.value)


@pytest.mark.parametrize("expires_in", [dt.timedelta(days=7, seconds=1), dt.timedelta(days=30), dt.timedelta(0), dt.timedelta(seconds=-5)])
def test_expiry_must_be_within_the_v4_limit(key_file: str, expires_in: dt.timedelta) -> None:
    with pytest.raises(ValueError, match="7 days"):
        GcsSigner(key_file).sign(URI, expires_in)


def test_naive_now_is_refused(key_file: str) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        GcsSigner(key_file).sign(URI, dt.timedelta(minutes=5), now=dt.datetime(2031, 5, 4, 12, 0))


def test_missing_key_file_names_the_file(tmp_path: Path) -> None:
    missing = str(tmp_path / "nowhere" / "key.json")
    with pytest.raises(FileNotFoundError, match="does not exist") as raised:
        GcsSigner(missing).sign(URI, dt.timedelta(minutes=5))
    assert missing in str(raised.value)


def test_malformed_key_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "key.json"
    path.write_text(json.dumps({"type": "service_account", "client_email": EMAIL}))
    with pytest.raises(ValueError, match="not a service-account JSON key") as raised:
        GcsSigner(str(path)).sign(URI, dt.timedelta(minutes=5))
    assert str(path) in str(raised.value)


@pytest.mark.parametrize("endpoint", ["storage.googleapis.com", "ftp://storage.googleapis.com", "https://storage.googleapis.com/prefix"])
def test_endpoint_must_be_a_bare_http_origin(endpoint: str) -> None:
    with pytest.raises(ValueError, match="no path"):
        GcsSigner(None, endpoint=endpoint)
