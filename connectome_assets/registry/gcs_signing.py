"""GCS V4 signed URLs (GET) for registered `gs://` data files.

Two signers, chosen by configuration:
- a service-account key file: the RSA key signs offline (`google.oauth2.service_account`);
- no key file (GKE workload identity): the default credentials ask IAM `signBlob` to sign as their
  own service account (one network call per URL; the access token is refreshed when it expires;
  the service account needs roles/iam.serviceAccountTokenCreator on itself).

The V4 canonical request is built here rather than through google-cloud-storage's
`Blob.generate_signed_url` (a client and a blob per object) or its private `_signing` module: it is a
handful of string operations, so a signature with a key costs one RSA-2048 signing operation
(about 1 ms, nearly all of it RSA, measured on a 2-core machine).
Spec: https://cloud.google.com/storage/docs/authentication/canonical-requests
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

MAX_EXPIRY = dt.timedelta(days=7)  # the V4 limit
_ALGORITHM = "GOOG4-RSA-SHA256"
_SCOPES = ["https://www.googleapis.com/auth/cloud-platform"]
_KEY_SETTING = "the registry's GCS key file setting (CONNECTOME_REGISTRY_GCS_KEY)"


@dataclass(frozen=True)
class SignedUrl:
    url: str
    expires_at: dt.datetime  # tz-aware UTC


class GcsSigner:
    """Signs `gs://bucket/object` URIs as path-style V4 URLs on `endpoint`; credentials load on first use."""

    def __init__(self, key_file: str | None = None, endpoint: str = "https://storage.googleapis.com") -> None:
        parts = urlsplit(endpoint)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.path.strip("/") or parts.query:
            raise ValueError(f"GCS endpoint {endpoint} must be scheme://host[:port] with no path")
        self._key_file = key_file
        self._endpoint = f"{parts.scheme}://{parts.netloc}"
        self._host = parts.netloc  # the Host header a client sends to this endpoint, the one signed header
        self._lock = threading.Lock()
        self._identity: tuple[str, Callable[[bytes], bytes]] | None = None  # (signer email, sign bytes)

    def sign(self, uri: str, expires_in: dt.timedelta, now: dt.datetime | None = None) -> SignedUrl:
        """A URL that GETs the object at `uri` with no other credential, valid `expires_in` from `now` (default: now)."""
        bucket, _, name = uri[len("gs://") :].partition("/") if uri.startswith("gs://") else ("", "", "")
        if not bucket or not name:
            raise ValueError(f"cannot sign {uri}: a GCS signed URL needs an object URI gs://bucket/object")
        seconds = int(expires_in.total_seconds())  # X-Goog-Expires is whole seconds
        if not 1 <= seconds <= MAX_EXPIRY.total_seconds():
            raise ValueError(f"cannot sign {uri} for {expires_in}: a GCS V4 signed URL lives between 1 second and 7 days")
        if now is not None and now.tzinfo is None:
            raise ValueError("`now` must be timezone-aware")
        moment = (now or dt.datetime.now(dt.timezone.utc)).astimezone(dt.timezone.utc).replace(microsecond=0)
        email, sign_bytes = self._signer()

        timestamp = moment.strftime("%Y%m%dT%H%M%SZ")
        scope = f"{moment:%Y%m%d}/auto/storage/goog4_request"
        # GCS wants the object name percent-encoded with `/` kept; quote() leaves only A-Za-z0-9_.-~ (and `/`).
        canonical_uri = f"/{bucket}/{quote(name, safe='/')}"
        params = {
            "X-Goog-Algorithm": _ALGORITHM,
            "X-Goog-Credential": f"{email}/{scope}",
            "X-Goog-Date": timestamp,
            "X-Goog-Expires": str(seconds),
            "X-Goog-SignedHeaders": "host",
        }
        # The query is sent exactly in its canonical form: sorted, names and values encoded.
        query = "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in sorted(params.items()))
        canonical_request = "\n".join(["GET", canonical_uri, query, f"host:{self._host}\n", "host", "UNSIGNED-PAYLOAD"])
        string_to_sign = "\n".join([_ALGORITHM, timestamp, scope, hashlib.sha256(canonical_request.encode()).hexdigest()])
        signature = sign_bytes(string_to_sign.encode()).hex()
        return SignedUrl(f"{self._endpoint}{canonical_uri}?{query}&X-Goog-Signature={signature}", moment + dt.timedelta(seconds=seconds))

    def _signer(self) -> tuple[str, Callable[[bytes], bytes]]:
        if self._identity is None:
            with self._lock:  # concurrent first requests load the credentials once
                if self._identity is None:
                    self._identity = self._from_key_file(self._key_file) if self._key_file else self._from_default_credentials()
        return self._identity

    @staticmethod
    def _from_key_file(path: str) -> tuple[str, Callable[[bytes], bytes]]:
        from google.oauth2 import service_account

        if not os.path.isfile(path):
            raise FileNotFoundError(f"GCS signing key file {path} does not exist; fix {_KEY_SETTING} or leave it empty to sign through IAM")
        try:
            credentials = service_account.Credentials.from_service_account_file(path)
        except ValueError as exc:
            raise ValueError(f"GCS signing key file {path} is not a service-account JSON key: {exc}") from None
        return credentials.signer_email, credentials.sign_bytes

    @staticmethod
    def _from_default_credentials() -> tuple[str, Callable[[bytes], bytes]]:
        import google.auth
        from google.auth import iam
        from google.auth.exceptions import DefaultCredentialsError
        from google.auth.transport.requests import Request

        try:
            credentials, _ = google.auth.default(scopes=_SCOPES)
        except DefaultCredentialsError as exc:
            raise RuntimeError(f"no Google credentials to sign GCS URLs through IAM ({exc}); set {_KEY_SETTING}") from None
        request = Request()
        # GKE/GCE credentials learn their service account's email only on refresh ("default" before).
        credentials.refresh(request)
        email = getattr(credentials, "service_account_email", None)
        if not email or "@" not in email:
            raise RuntimeError(
                f"the default Google credentials ({type(credentials).__name__}) name no service account to sign GCS URLs as; set {_KEY_SETTING}"
            )
        # iam.Signer calls signBlob as `email`, refreshing the access token before a request when it has expired.
        return email, iam.Signer(request, credentials, email).sign
