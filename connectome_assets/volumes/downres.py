"""2x2x2 mode downsampling of label (segmentation) volumes: scale k from scale k-1.

Each output voxel is the most frequent label among the (up to) 8 input voxels of its 2x2x2
block. Volumes are indexed (x, y, z), as tensorstore's neuroglancer_precomputed arrays are; the
output has ceil(n / 2) voxels per axis. Blocks are aligned to even coordinates, so at an odd
edge the last block is partial (4, 2 or 1 voxels) and takes the mode of the voxels it has —
exactly what tensorstore's `downsample(..., method="mode")` does there.

Tie rules (`rule=`)
-------------------
* ``"tensorstore"``: the most frequent label; among equally frequent labels the smallest
  (unsigned comparison). Label 0 is an ordinary label. This is tensorstore's `mode` exactly.
* ``"dvid"``: DVID's labelmap / labelarray downres (`labels.Block.Downres` -> `downresArray` in
  janelia-flyem/dvid datatype/common/labels/compressed.go): zero (background) voxels cast no
  vote; the most frequent NON-zero label wins; an all-zero block gives 0. DVID itself breaks ties
  by Go map iteration order, which is randomised per run, so DVID has no deterministic tie rule;
  ours takes the smallest of the tied non-zero labels (the same order as the tensorstore rule).
  Only the zero handling makes the two rules differ: a block with 5 zeros and 3 voxels of
  label 7 is 0 under "tensorstore" and 7 under "dvid".

(tinybrain's `downsample_segmentation` keeps the first of the tied labels in its scan order
instead, so it can differ from both on ties.)

Speed
-----
The kernel is compiled (numba, cached) and equally fast for C- and Fortran-ordered input: the
mode of a 2x2x2 block does not depend on the order its voxels are visited, so an F-ordered
volume is processed as its (C-contiguous) transpose and the output transposed back — no copy.
The output has the input's memory order. Any other layout is copied to C order first.

Per block: a uniform block (one label in all 8 voxels: 83% of the blocks of the real pinky40
segmentation) costs a chain of seven well-predicted compares. A mixed block with exactly two
labels (82% of the mixed ones: a boundary between two segments) is settled by the vote count of
its first label, with selects rather than branches; only blocks with three or more labels go
through an 8-input sorting network, where the longest run of equal values wins. On uint64 the
uniform path is bound by memory bandwidth (8 bytes per input voxel), not by compute.

Large volumes are split into slabs that a small thread pool takes one at a time, so a core
slowed by another process gets fewer slabs (numba's `prange` splits work statically, and the
machines this runs on are shared). Figures beside tinybrain and tensorstore: `benchmarks/volumes.py`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np

RULES = ("tensorstore", "dvid")
SUPPORTED_DTYPES = (np.dtype(np.uint8), np.dtype(np.uint16), np.dtype(np.uint32), np.dtype(np.uint64))

# Below this many output voxels a call runs on the calling thread: starting threads would cost
# more than they save.
_PARALLEL_MIN_OUTPUT_VOXELS = 1 << 18
# About this many output voxels per slab handed to a thread: large enough that dispatching a slab
# is noise, small enough that a 512^3 volume makes ~32 slabs to balance between threads.
_SLAB_OUTPUT_VOXELS = 1 << 19

Box = tuple[tuple[int, int], tuple[int, int], tuple[int, int]]


# ---------------------------------------------------------------------------------------------
# Compiled kernel


@numba.njit(cache=True)
def _compare_swap(a, b):  # pragma: no cover - compiled
    # min / max compile to conditional moves: no branch to mispredict on random labels.
    return min(a, b), max(a, b)


@numba.njit(cache=True)
def _mode_of_8(v0, v1, v2, v3, v4, v5, v6, v7, ignore_zero):  # pragma: no cover - compiled
    """Mode of eight labels; ties -> the smallest; with ignore_zero, zeros do not vote (all zero -> 0)."""
    # A 19-comparator sorting network for 8 inputs (19 is the minimum for 8), branch-free; it sorts
    # all 2^8 zero-one inputs, hence every input (zero-one principle).
    v0, v2 = _compare_swap(v0, v2)
    v1, v3 = _compare_swap(v1, v3)
    v4, v6 = _compare_swap(v4, v6)
    v5, v7 = _compare_swap(v5, v7)
    v0, v4 = _compare_swap(v0, v4)
    v1, v5 = _compare_swap(v1, v5)
    v2, v6 = _compare_swap(v2, v6)
    v3, v7 = _compare_swap(v3, v7)
    v0, v1 = _compare_swap(v0, v1)
    v2, v3 = _compare_swap(v2, v3)
    v4, v5 = _compare_swap(v4, v5)
    v6, v7 = _compare_swap(v6, v7)
    v2, v4 = _compare_swap(v2, v4)
    v3, v5 = _compare_swap(v3, v5)
    v1, v4 = _compare_swap(v1, v4)
    v3, v6 = _compare_swap(v3, v6)
    v1, v2 = _compare_swap(v1, v2)
    v3, v4 = _compare_swap(v3, v4)
    v5, v6 = _compare_swap(v5, v6)
    # Longest run of equal values in the sorted eight. A run only replaces the best when strictly
    # longer, so the earliest (smallest) of equally long runs is kept. Zeros sort first; when they
    # do not vote their run length counts as 0, and an all-zero block keeps best = 0.
    keep_zero = not ignore_zero
    run = 1
    best_run = 1 if (keep_zero or v0 != 0) else 0
    best = v0
    run = run + 1 if v1 == v0 else 1
    votes = run if (keep_zero or v1 != 0) else 0
    best = v1 if votes > best_run else best
    best_run = max(best_run, votes)
    run = run + 1 if v2 == v1 else 1
    votes = run if (keep_zero or v2 != 0) else 0
    best = v2 if votes > best_run else best
    best_run = max(best_run, votes)
    run = run + 1 if v3 == v2 else 1
    votes = run if (keep_zero or v3 != 0) else 0
    best = v3 if votes > best_run else best
    best_run = max(best_run, votes)
    run = run + 1 if v4 == v3 else 1
    votes = run if (keep_zero or v4 != 0) else 0
    best = v4 if votes > best_run else best
    best_run = max(best_run, votes)
    run = run + 1 if v5 == v4 else 1
    votes = run if (keep_zero or v5 != 0) else 0
    best = v5 if votes > best_run else best
    best_run = max(best_run, votes)
    run = run + 1 if v6 == v5 else 1
    votes = run if (keep_zero or v6 != 0) else 0
    best = v6 if votes > best_run else best
    best_run = max(best_run, votes)
    run = run + 1 if v7 == v6 else 1
    votes = run if (keep_zero or v7 != 0) else 0
    best = v7 if votes > best_run else best
    return best


@numba.njit(cache=True, inline="always")
def _mode_of_block(a, b, c, d, e, f, g, h, ignore_zero):  # pragma: no cover - compiled
    """Mode of a non-uniform block: a cheap exact path for two labels, else the sorting network.

    Four in five non-uniform blocks of a real segmentation hold exactly two labels (a boundary
    between two segments), where the count of the first label settles it.
    """
    # other = a label different from a (one exists: the block is not uniform); selects, no branches.
    other = h
    other = g if g != a else other
    other = f if f != a else other
    other = e if e != a else other
    other = d if d != a else other
    other = c if c != a else other
    other = b if b != a else other
    votes_a = 1 + np.int64(b == a) + np.int64(c == a) + np.int64(d == a) + np.int64(e == a)
    votes_a += np.int64(f == a) + np.int64(g == a) + np.int64(h == a)
    votes_other = np.int64(b == other) + np.int64(c == other) + np.int64(d == other) + np.int64(e == other)
    votes_other += np.int64(f == other) + np.int64(g == other) + np.int64(h == other)
    if votes_a + votes_other == 8:  # exactly two labels
        if ignore_zero and a == 0:
            return other  # zeros do not vote; the other label has at least one vote
        if ignore_zero and other == 0:
            return a
        return a if votes_a > votes_other or (votes_a == votes_other and a < other) else other
    return _mode_of_8(a, b, c, d, e, f, g, h, ignore_zero)


@numba.njit(cache=True, inline="always")
def _block_mode(src, row00, row01, row10, row11, k0, k1, ignore_zero):  # pragma: no cover - compiled
    a = src[row00 + k0]
    b = src[row00 + k1]
    c = src[row01 + k0]
    d = src[row01 + k1]
    e = src[row10 + k0]
    f = src[row10 + k1]
    g = src[row11 + k0]
    h = src[row11 + k1]
    # Uniform block (most of a segmentation): a chain of well-predicted compares, nothing else.
    if a == b and a == c and a == d and a == e and a == f and a == g and a == h:
        return a
    return _mode_of_block(a, b, c, d, e, f, g, h, ignore_zero)


@numba.njit(cache=True, nogil=True)
def _downsample_slab(volume, out, i_start, i_stop, j_start, j_stop, ignore_zero):  # pragma: no cover - compiled
    """out[i, j, k] for i in [i_start, i_stop), j in [j_start, j_stop), every k; C-contiguous arrays.

    A partial block at an odd edge clamps its missing second index to the last one, which counts
    every voxel it has the same number of times (2, 4 or 8): counts scale uniformly, so the mode,
    its ties and the zero rule come out as for the voxels alone.
    """
    n0, n1, n2 = volume.shape
    m0, m1, m2 = out.shape
    # Flat unsigned offsets: no negative-index wraparound code and no array views per row (each
    # view costs reference counting) in the loops.
    src = volume.reshape(volume.size)
    dst = out.reshape(out.size)
    pairs = n2 // 2  # full blocks along the last axis; an odd last voxel makes one partial block
    one = np.uintp(1)
    last = np.uintp(max(n2 - 1, 0))
    for i in range(i_start, i_stop):
        i0 = 2 * i
        i1 = min(i0 + 1, n0 - 1)
        for j in range(j_start, j_stop):
            j0 = 2 * j
            j1 = min(j0 + 1, n1 - 1)
            # Start offsets of the four input rows this output row reads, streamed in step.
            row00 = np.uintp((i0 * n1 + j0) * n2)
            row01 = np.uintp((i0 * n1 + j1) * n2)
            row10 = np.uintp((i1 * n1 + j0) * n2)
            row11 = np.uintp((i1 * n1 + j1) * n2)
            at = np.uintp((i * m1 + j) * m2)
            for kk in range(pairs):
                k = np.uintp(kk)
                k0 = k + k
                dst[at + k] = _block_mode(src, row00, row01, row10, row11, k0, k0 + one, ignore_zero)
            if pairs < m2:
                dst[at + np.uintp(pairs)] = _block_mode(src, row00, row01, row10, row11, last, last, ignore_zero)


# ---------------------------------------------------------------------------------------------
# Public API


def _default_threads() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _slabs(shape: tuple[int, int, int], threads: int) -> list[tuple[int, int, int, int]]:
    """(i_start, i_stop, j_start, j_stop) pieces of an output of `shape`, at least ~4 per thread."""
    n0, n1, n2 = shape
    pieces = max(4 * threads, math.ceil(n0 * n1 * n2 / _SLAB_OUTPUT_VOXELS))
    if n0 >= pieces:
        step = math.ceil(n0 / pieces)
        return [(i, min(i + step, n0), 0, n1) for i in range(0, n0, step)]
    # Thin along the first axis: split the second one too.
    per_plane = math.ceil(pieces / max(n0, 1))
    step = max(1, math.ceil(n1 / per_plane))
    return [(i, i + 1, j, min(j + step, n1)) for i in range(n0) for j in range(0, n1, step)]


def downsample_mode(volume: np.ndarray, rule: str = "tensorstore", threads: int | None = None) -> np.ndarray:
    """2x2x2 mode downsampling of a 3-D label volume indexed (x, y, z).

    `volume`: uint64 or uint32 labels (uint8 / uint16 work too), C- or Fortran-ordered (equally
    fast; other layouts are copied). Returns shape ceil(n / 2) per axis, same dtype, in the
    input's memory order. `rule`: "tensorstore" (most frequent, ties -> smallest label) or "dvid"
    (zeros do not vote; most frequent non-zero label, ties -> smallest; all zero -> 0); see the
    module docstring. `threads`: worker threads (default: the CPUs this process may use).
    """
    if rule not in RULES:
        raise ValueError(f"unknown mode rule {rule!r}: expected one of {', '.join(RULES)}")
    volume = np.asarray(volume)
    if volume.ndim != 3:
        raise ValueError(f"expected a 3-D label volume, got shape {volume.shape}")
    if volume.dtype.newbyteorder("=") not in SUPPORTED_DTYPES:
        raise TypeError(f"labels must be unsigned integers (uint64 / uint32 / uint16 / uint8), got {volume.dtype}")
    if not volume.dtype.isnative:
        volume = volume.astype(volume.dtype.newbyteorder("="))
    fortran = not volume.flags.c_contiguous and volume.flags.f_contiguous
    # The kernel wants C order; a Fortran array's transpose is C-contiguous and has the same blocks.
    source = volume.T if fortran else np.ascontiguousarray(volume)
    out = np.empty(tuple((n + 1) // 2 for n in source.shape), dtype=source.dtype)
    ignore_zero = rule == "dvid"
    threads = _default_threads() if threads is None else max(1, int(threads))
    if threads == 1 or out.size < _PARALLEL_MIN_OUTPUT_VOXELS:
        _downsample_slab(source, out, 0, out.shape[0], 0, out.shape[1], ignore_zero)
    else:
        slabs = _slabs(out.shape, threads)
        # Threads take slabs as they free up (dynamic balance); the kernel releases the GIL.
        with ThreadPoolExecutor(max_workers=min(threads, len(slabs))) as pool:
            for done in [pool.submit(_downsample_slab, source, out, *slab, ignore_zero) for slab in slabs]:
                done.result()
    return out.T if fortran else out


def source_box(out_box: Sequence[Sequence[int]], source_shape: Sequence[int]) -> Box:
    """The scale k-1 box, [start, stop) per axis, that the scale k box `out_box` is computed from.

    Blocks are aligned to even source coordinates, so output [lo, hi) reads source
    [2 lo, min(2 hi, n)): exactly its own blocks, nothing shared with a neighbouring region.
    """
    if len(out_box) != 3 or len(source_shape) != 3:
        raise ValueError("boxes and shapes are 3-D")
    box = []
    for (lo, hi), n in zip(out_box, source_shape):
        lo, hi, n = int(lo), int(hi), int(n)
        if not 0 <= lo < hi <= (n + 1) // 2:
            raise ValueError(f"output range [{lo}, {hi}) is outside the downsampled extent [0, {(n + 1) // 2}) of a {n}-voxel axis")
        box.append((2 * lo, min(2 * hi, n)))
    return (box[0], box[1], box[2])

