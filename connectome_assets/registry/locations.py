"""Where registered data may live: the configured roots (the platform's object store by default).

A location is canonicalised once (`file:///abs/path` or `gs://bucket/key`) and must lie inside
a root. Local paths are judged by their real path, so a symlink inside a root that points
outside it is refused, both for the location and for every data file under it.
"""

from __future__ import annotations

import os
import posixpath

from connectome_assets.registry.errors import Forbidden, Invalid


def canonical_location(location: str) -> str:
    """`file:///abs/path` or `gs://bucket/key` with no trailing slash; refuses relative paths and `..`.

    As everywhere in the platform, a URI carries the path literally (no percent-decoding): a hive
    partition folder is really named `region=a%20b` on disk, and that is the name to keep.
    """
    text = location.strip()
    if text.startswith("precomputed://"):
        text = text[len("precomputed://") :]
    if text.startswith("/"):
        text = "file://" + text
    if text.startswith("file://"):
        path = text[len("file://") :]
        if not path.startswith("/"):
            raise Invalid(f"location {location} names a host or a relative path; a file:// location is an absolute path (file:///abs/path)")
        _refuse_dot_segments(location, path)
        return "file://" + (posixpath.normpath(path) if path != "/" else path)
    if text.startswith("gs://"):
        bucket, _, key = text[len("gs://") :].partition("/")
        if not bucket:
            raise Invalid(f"location {location} has no bucket (gs://bucket/prefix)")
        _refuse_dot_segments(location, key)
        return f"gs://{bucket}/{key}".rstrip("/")
    raise Invalid(f"location {location} must be an absolute path, file:///abs/path or gs://bucket/prefix")


def _refuse_dot_segments(location: str, path: str) -> None:
    if any(part in (".", "..") for part in path.split("/")) or "\x00" in path:
        raise Invalid(f"location {location} contains '.' or '..' segments; give the canonical path")


def local_path(uri: str) -> str:
    """The filesystem path of a canonical `file://` location."""
    return uri[len("file://") :]


def within_roots(uri: str, roots: list[str]) -> bool:
    """Whether a canonical location lies inside one of the canonical roots (local ones by real path)."""
    for root in roots:
        if uri.startswith("file://") and root.startswith("file://"):
            real, real_root = os.path.realpath(local_path(uri)), os.path.realpath(local_path(root))
            if real == real_root or real.startswith(real_root.rstrip("/") + "/"):
                return True
        elif uri.startswith("gs://") and root.startswith("gs://"):
            if uri == root or uri.startswith(root.rstrip("/") + "/"):
                return True
    return False


def require_within_roots(uri: str, roots: list[str], what: str = "location") -> None:
    if not within_roots(uri, roots):
        raise Forbidden(f"{what} {uri} is outside the registry's allowed roots ({', '.join(roots)})")
