"""Opening source files by URI: a local path, `file://…` or `gs://bucket/key`.

Random access (Feather/Arrow IPC) and streaming (CSV, gzip) both go through pyarrow's
filesystems, so a `gs://` source streams exactly like a local one.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from urllib.parse import urlparse

import pyarrow as pa
import pyarrow.fs as pafs

from connectome_assets.connectome.errors import SourceError


def filesystem_for(uri: str) -> tuple[pafs.FileSystem, str]:
    """The pyarrow filesystem and in-filesystem path of a local path, `file://…` or `gs://…` URI."""
    parsed = urlparse(uri)
    if parsed.scheme in ("", "file"):
        path = parsed.path if parsed.scheme == "file" else uri
        return pafs.LocalFileSystem(), os.path.abspath(os.path.expanduser(path))
    if parsed.scheme == "gs":
        emulator = os.environ.get("STORAGE_EMULATOR_HOST")
        if emulator:
            endpoint = urlparse(emulator)
            fs = pafs.GcsFileSystem(anonymous=True, scheme=endpoint.scheme or "http", endpoint_override=endpoint.netloc)
        else:
            fs = pafs.GcsFileSystem()
        return fs, f"{parsed.netloc}{parsed.path}"
    raise SourceError(uri, f"unsupported URI scheme '{parsed.scheme}' (use a local path, file:// or gs://)")


@dataclass(frozen=True)
class FileFingerprint:
    uri: str
    size: int
    modified_ns: int

    @property
    def token(self) -> str:
        return f"{self.uri}|{self.size}|{self.modified_ns}"


def fingerprint(uri: str) -> FileFingerprint:
    """Identity of a file's current contents without reading it (size and modification time)."""
    fs, path = filesystem_for(uri)
    try:
        info = fs.get_file_info(path)
    except OSError as exc:
        raise SourceError(uri, f"source file cannot be inspected ({exc})") from None
    if info.type != pafs.FileType.File:
        raise SourceError(uri, "source file does not exist")
    modified = info.mtime_ns if info.mtime_ns is not None else 0
    return FileFingerprint(uri=uri, size=info.size or 0, modified_ns=modified)


def combined_fingerprint(uris: list[str]) -> str:
    """One data version for a set of source files."""
    digest = hashlib.sha256()
    for uri in sorted(uris):
        digest.update(fingerprint(uri).token.encode())
        digest.update(b"\0")
    return digest.hexdigest()[:24]


def open_random_access(uri: str) -> pa.NativeFile:
    """A seekable file, for Feather / Arrow IPC files read batch by batch."""
    fs, path = filesystem_for(uri)
    fingerprint(uri)  # a missing file is named as such, not as an OSError
    try:
        return fs.open_input_file(path)
    except OSError as exc:
        raise SourceError(uri, f"source file cannot be opened ({exc})") from None


def open_stream(uri: str) -> pa.NativeFile:
    """A forward-only stream, gunzipped when the name ends in .gz."""
    fs, path = filesystem_for(uri)
    fingerprint(uri)
    compression = "gzip" if path.endswith(".gz") else None
    try:
        return fs.open_input_stream(path, compression=compression)
    except OSError as exc:
        raise SourceError(uri, f"source file cannot be opened ({exc})") from None
