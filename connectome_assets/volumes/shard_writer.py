"""Putting encoded chunks into one output shard of a sharded neuroglancer scale.

Through tensorstore's `neuroglancer_uint64_sharded` kvstore over the destination (`file://` or
`gs://`), rooted at the scale's folder, with the scale's sharding spec as it is: the driver lays
out minishards and shard index, applies the minishard index encoding and the data encoding (gzip
or raw), and names the shard file. A key is a chunk id (the compressed Morton code of the chunk's
grid position) as 8 big-endian bytes; the value is the chunk's encoded bytes exactly as the
`neuroglancer_precomputed` driver would store them (e.g. compressed_segmentation).

As for the array path (s0.py), the exporter's lessons hold: all chunks of a shard go into ONE
transaction, committed once, so the shard file is written once (no read-modify-write per batch:
~150x write amplification on GCS), and every write's future is awaited before the commit (the
exporter once lost ~31% of s0 by not doing so). Nothing is written unless `commit` is reached.
"""

from __future__ import annotations

from typing import Any

import tensorstore as ts

from connectome_assets.volumes.precomputed import Scale, VolumeSpecError, kvstore_spec


def sharded_kvstore_spec(dest_url: str, scale: Scale) -> dict[str, Any]:
    """The scale's shards as a kvstore of chunk ids (8-byte big-endian keys) -> encoded chunk bytes."""
    base = kvstore_spec(dest_url)
    return {"driver": "neuroglancer_uint64_sharded", "base": {**base, "path": f"{base['path']}{scale.key}/"}, "metadata": scale.sharding.to_info()}


def chunk_key(chunk_id: int) -> bytes:
    """The kvstore key of a chunk id: 8 bytes, big-endian (the driver's uint64 key format)."""
    return chunk_id.to_bytes(8, "big")


class ShardWriter:
    """One transaction of encoded chunks, committed once by `commit`; leaving the `with` block
    without a commit (an error) aborts it and writes nothing.

    Its callers name chunks by their grid position from voxel 0 (DVID's block grid, the parent
    scale's chunks), and the chunk ids the driver reads count from the scale's voxel offset, so a
    scale with another offset is refused."""

    def __init__(self, dest_url: str, scale: Scale) -> None:
        if any(scale.voxel_offset):
            raise VolumeSpecError(f"{dest_url}{scale.key}: chunks are written by id from voxel 0, so the scale needs voxel_offset 0, not {list(scale.voxel_offset)}")
        self._store = ts.KvStore.open(sharded_kvstore_spec(dest_url, scale)).result()
        self._transaction = ts.Transaction()
        self._target = self._store.with_transaction(self._transaction)
        self._pending: list[ts.Future] = []
        self.chunks = 0

    def write(self, chunk_id: int, encoded: bytes) -> None:
        """Stage one chunk; its future is awaited before the commit."""
        self._pending.append(self._target.write(chunk_key(chunk_id), encoded))
        self.chunks += 1

    def commit(self) -> None:
        """Await every staged write, then commit the transaction once (nothing to commit: no shard file)."""
        for future in self._pending:
            future.result()
        self._pending.clear()
        if self.chunks:
            self._transaction.commit_async().result()

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, kind: type[BaseException] | None, *_: Any) -> None:
        if kind is not None and not self._transaction.commit_started:
            self._transaction.abort()
