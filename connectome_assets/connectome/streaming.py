"""Bounded, order-preserving parallel map over a stream of record batches.

The per-batch work of an import (pyarrow compute, the compiled filter) releases the GIL, so a
few threads keep both cores busy. At most `workers + 1` batches are in flight, so memory stays
bounded by a handful of batches however long the stream is, and results come out in source order.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

In = TypeVar("In")
Out = TypeVar("Out")


def ordered_parallel_map(work: Callable[[In], Out], items: Iterable[In], workers: int | None = None) -> Iterator[Out]:
    workers = workers or os.cpu_count() or 1
    pending: deque[Future[Out]] = deque()
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="batch-worker") as pool:
        for item in items:
            pending.append(pool.submit(work, item))
            while len(pending) > workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
