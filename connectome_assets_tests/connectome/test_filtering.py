"""`filter_to_annotated_endpoints`: exact rows kept, drop counts by reason, numpy as the reference."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from connectome_assets.connectome.filtering import AnnotatedNeuronSet, EndpointFilterStats, filter_to_annotated_endpoints

BIG = 2**63  # ids at and above this do not fit a signed 64-bit integer


def _batch(pre, post, weight=None) -> pa.RecordBatch:
    n = len(pre)
    return pa.record_batch(
        {
            "pre_neuron_id": pa.array(pre, pa.uint64()),
            "post_neuron_id": pa.array(post, pa.uint64()),
            "weight": pa.array(weight if weight is not None else list(range(n)), pa.uint32()),
        }
    )


def _run(batches, annotated_ids):
    stats = EndpointFilterStats()
    out = list(filter_to_annotated_endpoints(batches, AnnotatedNeuronSet(np.asarray(annotated_ids, dtype=np.uint64)), stats))
    return out, stats


def _rows(batches) -> list[tuple[int, int, int]]:
    return [(r["pre_neuron_id"], r["post_neuron_id"], r["weight"]) for b in batches for r in b.to_pylist()]


def test_hand_built_batch_keeps_exact_rows_and_counts_each_reason():
    annotated = [1, 2, 3, BIG + 7, 2**64 - 1]
    batch = _batch(
        pre=[1, 4, 1, 5, 2, BIG + 8, BIG + 7, 2**64 - 1, 3],
        post=[2, 1, 6, 7, 3, 1, 2**64 - 1, 9, 2**64 - 2],
        weight=[10, 11, 12, 13, 14, 15, 16, 17, 18],
    )
    out, stats = _run([batch], annotated)
    assert _rows(out) == [(1, 2, 10), (2, 3, 14), (BIG + 7, 2**64 - 1, 16)]
    assert out[0].schema == batch.schema
    assert stats.rows_read == 9
    assert stats.rows_kept == 3
    assert stats.dropped_pre_missing == 2  # (4, 1), (BIG+8, 1)
    assert stats.dropped_post_missing == 3  # (1, 6), (2**64-1, 9), (3, 2**64-2)
    assert stats.dropped_both_missing == 1  # (5, 7)
    assert stats.rows_dropped == 6
    assert sorted(stats.sample_unannotated_ids) == sorted([4, 6, 5, 7, BIG + 8, 9, 2**64 - 2])


def test_only_pre_missing_only_post_missing_and_both_missing_are_separate():
    annotated = [10, 20]
    cases = {
        "pre": (_batch([99, 98], [10, 20]), (2, 0, 0)),
        "post": (_batch([10, 20, 20], [97, 96, 95]), (0, 3, 0)),
        "both": (_batch([91], [92]), (0, 0, 1)),
    }
    for batch, expected in cases.values():
        out, stats = _run([batch], annotated)
        assert out == []  # nothing kept, and no empty batch yielded
        assert (stats.dropped_pre_missing, stats.dropped_post_missing, stats.dropped_both_missing) == expected
        assert stats.rows_kept == 0
        assert stats.rows_read == batch.num_rows


def test_batch_with_nothing_to_drop_passes_through_whole():
    batch = _batch([1, 2, 1], [2, 1, 1])
    out, stats = _run([batch], [1, 2])
    assert len(out) == 1 and out[0].equals(batch)
    assert (stats.rows_read, stats.rows_kept, stats.rows_dropped) == (3, 3, 0)
    assert stats.sample_unannotated_ids == []


def test_empty_annotated_set_drops_everything():
    out, stats = _run([_batch([1, 2], [3, 2])], [])
    assert out == []
    assert stats.dropped_both_missing == 2
    assert sorted(stats.sample_unannotated_ids) == [1, 2, 3]


def test_stats_grow_as_batches_flow_and_are_complete_after_iteration():
    stats = EndpointFilterStats()
    batches = [_batch([1, 9], [2, 2]), _batch([], []), _batch([2, 2, 8], [1, 8, 1])]
    iterator = filter_to_annotated_endpoints(iter(batches), AnnotatedNeuronSet(np.array([1, 2], np.uint64)), stats)
    assert stats.rows_read == 0  # nothing read before the caller asks
    first = next(iterator)
    assert _rows([first]) == [(1, 2, 0)]
    assert stats.rows_read == 2 and stats.rows_kept == 1
    rest = list(iterator)
    assert _rows(rest) == [(2, 1, 0)]
    assert stats.rows_read == 5
    assert stats.rows_kept == 2
    assert (stats.dropped_pre_missing, stats.dropped_post_missing, stats.dropped_both_missing) == (2, 1, 0)
    assert sorted(stats.sample_unannotated_ids) == [8, 9]


def test_annotated_set_accepts_arrow_chunked_ids_and_counts_unique():
    ids = pa.chunked_array([pa.array([5, BIG + 1], pa.uint64()), pa.array([5, 2**64 - 1], pa.uint64())])
    annotated = AnnotatedNeuronSet(ids)
    assert annotated.size == 3
    keep, pre_only, post_only, both = annotated.endpoint_mask(
        np.array([5, BIG + 1, 6, 2**64 - 1], np.uint64), np.array([2**64 - 1, 4, 5, BIG], np.uint64)
    )
    assert keep.tolist() == [True, False, False, False]
    assert (pre_only, post_only, both) == (1, 2, 0)


def _random_ids(rng: np.random.Generator, n: int) -> np.ndarray:
    """A mix of small, sequential, shifted and > 2**63 ids."""
    parts = [
        rng.integers(0, 1000, n // 4, dtype=np.uint64),
        np.arange(n // 4, dtype=np.uint64) + np.uint64(10**6),
        (rng.integers(0, 2**20, n // 4, dtype=np.uint64) << np.uint64(40)),
        rng.integers(BIG, 2**64 - 1, n - 3 * (n // 4), dtype=np.uint64, endpoint=True),
    ]
    return np.concatenate(parts)


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_randomized_against_numpy_isin(seed):
    rng = np.random.default_rng(seed)
    universe = np.unique(_random_ids(rng, 4000))
    annotated_mask = rng.random(len(universe)) < 0.6
    annotated = universe[annotated_mask]
    sizes = [0, int(rng.integers(1, 50)), 0, int(rng.integers(500, 5000)), int(rng.integers(1, 5000)), 0]
    batches = []
    for size in sizes:
        pre = rng.choice(universe, size)
        post = rng.choice(universe, size)
        batches.append(_batch(pre, post, rng.integers(1, 100, size)))

    out, stats = _run(batches, annotated)

    all_pre = np.concatenate([b["pre_neuron_id"].to_numpy() for b in batches])
    all_post = np.concatenate([b["post_neuron_id"].to_numpy() for b in batches])
    all_weight = np.concatenate([b["weight"].to_numpy() for b in batches])
    has_pre, has_post = np.isin(all_pre, annotated), np.isin(all_post, annotated)
    keep = has_pre & has_post

    kept_pre = np.concatenate([b["pre_neuron_id"].to_numpy() for b in out]) if out else np.array([], np.uint64)
    kept_post = np.concatenate([b["post_neuron_id"].to_numpy() for b in out]) if out else np.array([], np.uint64)
    kept_weight = np.concatenate([b["weight"].to_numpy() for b in out]) if out else np.array([], np.uint32)
    np.testing.assert_array_equal(kept_pre, all_pre[keep])
    np.testing.assert_array_equal(kept_post, all_post[keep])
    np.testing.assert_array_equal(kept_weight, all_weight[keep])
    assert all(b.num_rows > 0 for b in out)

    # Never a row with an unannotated endpoint.
    assert np.isin(kept_pre, annotated).all() and np.isin(kept_post, annotated).all()

    assert stats.rows_read == len(all_pre)
    assert stats.rows_kept == int(keep.sum())
    assert stats.dropped_pre_missing == int((~has_pre & has_post).sum())
    assert stats.dropped_post_missing == int((has_pre & ~has_post).sum())
    assert stats.dropped_both_missing == int((~has_pre & ~has_post).sum())
    assert stats.rows_kept + stats.rows_dropped == stats.rows_read

    sample = stats.sample_unannotated_ids
    assert 1 <= len(sample) <= 20
    assert len(set(sample)) == len(sample)
    assert all(isinstance(v, int) for v in sample)
    assert not np.isin(np.array(sample, np.uint64), annotated).any()
    dropped_ids = set(all_pre[~has_pre].tolist()) | set(all_post[~has_post].tolist())
    assert set(sample) <= dropped_ids


def test_sample_is_capped_at_twenty_over_many_batches():
    annotated = np.array([1], np.uint64)
    batches = [_batch(np.arange(100 * k + 2, 100 * k + 60), np.ones(58, np.uint64)) for k in range(5)]
    out, stats = _run(batches, annotated)
    assert out == []
    assert stats.dropped_pre_missing == 5 * 58
    assert len(stats.sample_unannotated_ids) == 20
    assert 1 not in stats.sample_unannotated_ids


def test_the_largest_uint64_id_is_a_valid_annotated_id() -> None:
    """The hash set marks empty slots with 2**64-1; an annotated id of that value still counts."""
    largest = 2**64 - 1
    annotated = AnnotatedNeuronSet(np.array([1, largest], dtype=np.uint64))
    batch = pa.record_batch(
        {"pre_neuron_id": pa.array([largest, 1, 7, largest], pa.uint64()), "post_neuron_id": pa.array([1, largest, largest, 8], pa.uint64())}
    )
    stats = EndpointFilterStats()
    kept = pa.Table.from_batches(list(filter_to_annotated_endpoints([batch], annotated, stats)))
    assert kept.to_pydict() == {"pre_neuron_id": [largest, 1], "post_neuron_id": [1, largest]}
    assert (stats.dropped_pre_missing, stats.dropped_post_missing, stats.dropped_both_missing) == (1, 1, 0)


def test_raw_signed_id_columns_are_filtered_without_conversion() -> None:
    """Sources hand the filter their own int64 columns; a negative id is simply not annotated."""
    annotated = AnnotatedNeuronSet(np.array([1, 2, 3], dtype=np.uint64))
    raw = pa.record_batch({"body_pre": pa.array([1, -1, 2, -3], pa.int64()), "body_post": pa.array([2, 1, -2, -3], pa.int64())})
    stats = EndpointFilterStats()
    kept = pa.Table.from_batches(list(filter_to_annotated_endpoints([raw], annotated, stats, "body_pre", "body_post")))
    assert kept.to_pydict() == {"body_pre": [1], "body_post": [2]}
    assert (stats.dropped_pre_missing, stats.dropped_post_missing, stats.dropped_both_missing) == (1, 1, 1)


@pytest.mark.parametrize("seed", [0, 1])
def test_positions_of_numbers_ids_by_their_place_in_the_set(seed: int) -> None:
    rng = np.random.default_rng(seed)
    ids = np.unique(rng.integers(1, 2**63, 50_000, dtype=np.int64)).astype(np.uint64)
    ids = np.append(ids, np.uint64(2**64 - 1))  # the hash set's own sentinel is a valid id too
    vertices = AnnotatedNeuronSet(ids)
    probe = np.concatenate([ids[rng.integers(0, len(ids), 10_000)], np.array([0, 7, 2**63 + 5], np.uint64)])
    positions, missing = vertices.positions_of(probe)
    place = {value: i for i, value in enumerate(ids.tolist())}
    assert positions.tolist() == [place.get(value, -1) for value in probe.tolist()]
    assert missing == 3
