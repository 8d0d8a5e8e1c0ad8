"""Temporary download URLs for `file://` data, served by the registry's own route.

`GET /v1/files/<absolute path>?user=U&expires=EPOCH&sig=HEX`, where `sig` is an HMAC-SHA256 over
the path, the user and the expiry under the registry's secret: the URL is the only credential a
query engine needs, it cannot be bent to another path, user or lifetime, and it dies on time.
The path is checked before the signature is even compared (no dot segments, no empty segments,
no encoded slashes or backslashes), and after it (the real path, symlinks resolved, lies inside an
allowed root).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import os
import re
from urllib.parse import quote, unquote

from connectome_assets.registry.errors import BadRequest, Forbidden, NotFound, Unavailable
from connectome_assets.registry.locations import within_roots

ROUTE = "/v1/files"
LOCAL_HOST, LOCAL_PORT = "127.0.0.1", 8765  # `connectome registry serve`'s default address
LOCAL_SERVE_URL = f"http://{LOCAL_HOST}:{LOCAL_PORT}"  # where URLs issued in-process point, with no public URL set
_ENCODED_SEPARATOR = re.compile(r"%(2f|5c|00)", re.IGNORECASE)


def _signature(secret: bytes, path: str, user: str, expires: int) -> str:
    return hmac.new(secret, f"{path}\n{user}\n{expires}".encode(), hashlib.sha256).hexdigest()


def sign_download(base_url: str, path: str, user: str, expires_at: dt.datetime, secret: bytes) -> str:
    """The download URL of the local file at absolute `path` for `user`, valid until `expires_at`."""
    if not secret:
        raise Unavailable("the registry has no download key to sign file:// URLs with (CONNECTOME_REGISTRY_SECRET)")
    expires = int(expires_at.timestamp())
    query = f"user={quote(user, safe='')}&expires={expires}&sig={_signature(secret, path, user, expires)}"
    return f"{base_url.rstrip('/')}{ROUTE}{quote(path)}?{query}"


def verified_download_path(
    raw_path: str, user: str, expires: str, sig: str, secret: bytes, roots: list[str], now: dt.datetime | None = None
) -> str:
    """The local file a download request may read; raises BadRequest / Forbidden / NotFound otherwise.

    `raw_path` is the request path after the route, still percent-encoded (as it came off the wire).
    """
    if not secret:
        raise Unavailable("the registry has no download key to check download URLs with (CONNECTOME_REGISTRY_SECRET)")
    if _ENCODED_SEPARATOR.search(raw_path):
        raise BadRequest("download path contains an encoded slash, backslash or NUL")
    path = unquote(raw_path)
    segments = path.split("/")
    if not path.startswith("/") or any(s in ("", ".", "..") for s in segments[1:]) or "\\" in path or "\x00" in path:
        raise BadRequest("download path must be an absolute path without empty, '.' or '..' segments")
    try:
        expires_epoch = int(expires)
    except ValueError:
        raise BadRequest("download URL has no valid `expires`") from None
    if not hmac.compare_digest(_signature(secret, path, user, expires_epoch), sig):
        raise Forbidden("download URL signature does not match its path, user and expiry")
    moment = now or dt.datetime.now(dt.timezone.utc)
    if moment.timestamp() > expires_epoch:
        raise Forbidden(f"download URL expired at {dt.datetime.fromtimestamp(expires_epoch, dt.timezone.utc).isoformat()}")
    # Judged by its real path: a symlink that leads out of the roots is refused, one inside them is not.
    if not within_roots("file://" + path, roots):
        raise Forbidden("download path is outside the registry's allowed roots")
    if not os.path.isfile(path):
        raise NotFound("file no longer exists")
    return path
