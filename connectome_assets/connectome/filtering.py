"""`filter_to_annotated_endpoints`: the ONE source-aware filter every import path calls.

A connection row is kept only if both its pre and post ids are annotated neurons of the
dataset. Rows with an unannotated endpoint are dropped and counted by reason; they are never
turned into placeholder neurons (runbook: that would change the biological scope of the
dataset and corrupt coverage and graph summaries).

The annotated ids go into an open-addressing hash set built once per import (pyarrow's
`is_in` rebuilds its set on every call), and the membership test is a compiled loop over each
record batch, so memory is bounded by one batch whatever the number of rows.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import numba
import numpy as np
import pyarrow as pa

_SAMPLE_IDS = 20


@numba.njit(cache=True, nogil=True)
def _insert_all(ids, keys, used, shift):  # pragma: no cover - compiled
    mask = np.uint64(len(keys) - 1)
    for i in range(len(ids)):
        key = ids[i]
        slot = (key * np.uint64(0x9E3779B97F4A7C15)) >> np.uint64(shift)
        while used[slot] and keys[slot] != key:
            slot = (slot + np.uint64(1)) & mask
        keys[slot] = key
        used[slot] = True


@numba.njit(cache=True, nogil=True)
def _contains(key, keys, used, shift, mask):  # pragma: no cover - compiled
    slot = (key * np.uint64(0x9E3779B97F4A7C15)) >> np.uint64(shift)
    while used[slot]:
        if keys[slot] == key:
            return True
        slot = (slot + np.uint64(1)) & mask
    return False


@numba.njit(cache=True, parallel=True, nogil=True)
def _endpoint_mask(pre, post, keys, used, shift, keep):  # pragma: no cover - compiled
    mask = np.uint64(len(keys) - 1)
    pre_only = 0
    post_only = 0
    both = 0
    for i in numba.prange(len(pre)):
        has_pre = _contains(pre[i], keys, used, shift, mask)
        has_post = _contains(post[i], keys, used, shift, mask)
        keep[i] = has_pre and has_post
        if not has_pre and not has_post:
            both += 1
        elif not has_pre:
            pre_only += 1
        elif not has_post:
            post_only += 1
    return pre_only, post_only, both


class AnnotatedNeuronSet:
    """The dataset's annotated neuron ids as a hash set the compiled filter probes."""

    def __init__(self, neuron_ids: np.ndarray | pa.Array | pa.ChunkedArray) -> None:
        ids = _as_uint64(neuron_ids)
        bits = max(10, int(np.ceil(np.log2(max(len(ids), 1) * 4))))  # load factor <= 1/4
        self._keys = np.zeros(1 << bits, dtype=np.uint64)
        self._used = np.zeros(1 << bits, dtype=np.bool_)
        self._shift = 64 - bits
        _insert_all(ids, self._keys, self._used, self._shift)
        self.size = int(np.unique(ids).size) if len(ids) else 0

    def endpoint_mask(self, pre: np.ndarray, post: np.ndarray) -> tuple[np.ndarray, int, int, int]:
        """Keep-mask and the (pre only, post only, both) missing counts for one batch."""
        keep = np.empty(len(pre), dtype=np.bool_)
        pre_only, post_only, both = _endpoint_mask(pre, post, self._keys, self._used, self._shift, keep)
        return keep, int(pre_only), int(post_only), int(both)


@dataclass
class EndpointFilterStats:
    """What the filter read, kept and dropped, by reason."""

    rows_read: int = 0
    rows_kept: int = 0
    dropped_pre_missing: int = 0
    dropped_post_missing: int = 0
    dropped_both_missing: int = 0
    sample_unannotated_ids: list[int] = field(default_factory=list)

    @property
    def rows_dropped(self) -> int:
        return self.dropped_pre_missing + self.dropped_post_missing + self.dropped_both_missing

    def remember_unannotated(self, ids: np.ndarray) -> None:
        """Keep up to 20 distinct unannotated ids for the materialization metadata."""
        if len(self.sample_unannotated_ids) >= _SAMPLE_IDS or len(ids) == 0:
            return
        seen = set(self.sample_unannotated_ids)
        for value in np.unique(ids[: 4 * _SAMPLE_IDS]).tolist():
            if value not in seen and len(self.sample_unannotated_ids) < _SAMPLE_IDS:
                self.sample_unannotated_ids.append(int(value))
                seen.add(value)


def _as_uint64(values: np.ndarray | pa.Array | pa.ChunkedArray) -> np.ndarray:
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if isinstance(values, pa.Array):
        if values.null_count:
            raise ValueError("neuron ids must not be null")
        values = values.cast(pa.uint64()).to_numpy(zero_copy_only=False)
    return np.ascontiguousarray(values, dtype=np.uint64)


def filter_to_annotated_endpoints(
    batches: Iterable[pa.RecordBatch],
    annotated: AnnotatedNeuronSet,
    stats: EndpointFilterStats,
    pre_column: str = "pre_neuron_id",
    post_column: str = "post_neuron_id",
) -> Iterator[pa.RecordBatch]:
    """Yield each batch with only the rows whose pre AND post ids are annotated; count the rest.

    Streams: one batch in memory at a time. `stats` is updated as batches flow, so it is
    complete once the iterator is exhausted.
    """
    for batch in batches:
        if batch.num_rows == 0:
            continue
        pre = _as_uint64(batch.column(pre_column))
        post = _as_uint64(batch.column(post_column))
        keep, pre_only, post_only, both = annotated.endpoint_mask(pre, post)
        stats.rows_read += batch.num_rows
        stats.dropped_pre_missing += pre_only
        stats.dropped_post_missing += post_only
        stats.dropped_both_missing += both
        dropped = pre_only + post_only + both
        if dropped == 0:
            stats.rows_kept += batch.num_rows
            yield batch
            continue
        if len(stats.sample_unannotated_ids) < _SAMPLE_IDS:
            drop = ~keep
            unannotated_pre = pre[drop][~annotated.endpoint_mask(pre[drop], pre[drop])[0]]
            unannotated_post = post[drop][~annotated.endpoint_mask(post[drop], post[drop])[0]]
            stats.remember_unannotated(np.concatenate([unannotated_pre, unannotated_post]))
        kept = batch.filter(pa.array(keep))
        stats.rows_kept += kept.num_rows
        if kept.num_rows:
            yield kept
