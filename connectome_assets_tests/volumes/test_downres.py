"""2x2x2 mode downsampling against an independent reference, tensorstore, and the real pinky40 volume."""

from __future__ import annotations

import gzip
import itertools
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from connectome_assets.volumes.downres import downsample_mode, source_box

BIG = [0, 1, 2, 2**32 + 1, 2**63, 2**63 + 1, 2**64 - 1]  # labels above 2**32 and 2**63, and 0


def reference_modes(volume: np.ndarray) -> dict[str, np.ndarray]:
    """Plain Python: for each (possibly partial) 2x2x2 block, count with Counter and apply each rule."""
    shape = tuple((n + 1) // 2 for n in volume.shape)
    out = {rule: np.zeros(shape, dtype=volume.dtype) for rule in ("tensorstore", "dvid")}
    flat = volume.tolist()  # Python ints: no numpy comparison or ordering involved
    for i, j, k in itertools.product(*(range(n) for n in shape)):
        votes = Counter(
            flat[x][y][z]
            for x in range(2 * i, min(2 * i + 2, volume.shape[0]))
            for y in range(2 * j, min(2 * j + 2, volume.shape[1]))
            for z in range(2 * k, min(2 * k + 2, volume.shape[2]))
        )
        most = max(votes.values())
        out["tensorstore"][i, j, k] = min(label for label, count in votes.items() if count == most)
        votes.pop(0, None)  # dvid: zeros do not vote; all zero -> 0
        if votes:
            most = max(votes.values())
            out["dvid"][i, j, k] = min(label for label, count in votes.items() if count == most)
    return out


def reference_mode(volume: np.ndarray, rule: str) -> np.ndarray:
    return reference_modes(volume)[rule]


def random_volume(rng: np.random.Generator, shape: tuple[int, ...], labels: list[int], dtype: type, fortran: bool) -> np.ndarray:
    """Few distinct labels, so most mixed blocks have ties."""
    chosen = rng.choice(np.array(labels, dtype=dtype), size=int(rng.integers(1, 4)), replace=False)
    volume = chosen[rng.integers(0, len(chosen), size=shape)]
    return np.asfortranarray(volume) if fortran else np.ascontiguousarray(volume)


SHAPES = [(1, 1, 1), (2, 2, 2), (3, 3, 3), (1, 4, 7), (5, 2, 3), (7, 6, 5), (8, 9, 10), (16, 3, 17)]


@pytest.mark.parametrize("rule", ["tensorstore", "dvid"])
@pytest.mark.parametrize("fortran", [False, True], ids=["C", "F"])
def test_uint64_matches_the_reference_on_ties_big_labels_and_odd_shapes(rule: str, fortran: bool) -> None:
    rng = np.random.default_rng(20240611)
    for shape in SHAPES:
        for _ in range(6):
            volume = random_volume(rng, shape, BIG, np.uint64, fortran)
            got = downsample_mode(volume, rule)
            assert got.dtype == np.uint64 and got.shape == tuple((n + 1) // 2 for n in shape)
            np.testing.assert_array_equal(got, reference_mode(volume, rule), err_msg=f"{shape} {rule}")


@pytest.mark.parametrize("rule", ["tensorstore", "dvid"])
def test_uint32_and_smaller_dtypes_match_the_reference(rule: str) -> None:
    rng = np.random.default_rng(7)
    for dtype, labels in ((np.uint32, [0, 1, 5, 2**31, 2**32 - 1]), (np.uint16, [0, 3, 65535]), (np.uint8, [0, 9, 255])):
        for shape in ((9, 8, 7), (4, 5, 6)):
            volume = random_volume(rng, shape, labels, dtype, fortran=bool(rng.integers(2)))
            got = downsample_mode(volume, rule)
            assert got.dtype == dtype
            np.testing.assert_array_equal(got, reference_mode(volume, rule))


def blocks_in_a_row(blocks: np.ndarray) -> np.ndarray:
    """A (2, 2, 2n) volume whose n 2x2x2 blocks hold the rows of `blocks` (n, 8)."""
    return np.ascontiguousarray(blocks.reshape(-1, 2, 2, 2).transpose(1, 2, 0, 3).reshape(2, 2, -1))


def test_every_block_over_three_labels_with_zero() -> None:
    """All 3^8 = 6,561 arrangements of {0, 2**63, 1} in a block: every tie and zero pattern."""
    for labels in ([0, 2**63, 1], [2**64 - 1, 0, 2**32]):
        table = np.array(labels, dtype=np.uint64)
        blocks = table[np.array(list(itertools.product(range(3), repeat=8)))]
        volume = blocks_in_a_row(blocks)
        for rule in ("tensorstore", "dvid"):
            np.testing.assert_array_equal(downsample_mode(volume, rule), reference_mode(volume, rule))


def test_many_labels_per_block_use_the_sorting_network_path() -> None:
    """Blocks with 3..8 distinct labels (not the two-label shortcut), and 8 distinct in every order."""
    rng = np.random.default_rng(3)
    for _ in range(20):
        volume = rng.choice(np.array(BIG, dtype=np.uint64), size=(6, 6, 6))
        for rule in ("tensorstore", "dvid"):
            np.testing.assert_array_equal(downsample_mode(volume, rule), reference_mode(volume, rule))
    distinct = np.array([5, 0, 2**63, 9, 2**64 - 1, 1, 2**32, 7], dtype=np.uint64)
    blocks = distinct[np.array(list(itertools.permutations(range(8))))[::7]]  # 5,760 orders
    volume = blocks_in_a_row(blocks)
    assert (downsample_mode(volume, "tensorstore") == 0).all()  # all counts 1: the smallest, 0
    assert (downsample_mode(volume, "dvid") == 1).all()  # the smallest non-zero


def block(values: list[int]) -> np.ndarray:
    return np.array(values, dtype=np.uint64).reshape(2, 2, 2)


@pytest.mark.parametrize(
    ("values", "tensorstore", "dvid"),
    [
        ([0] * 8, 0, 0),  # all zero -> 0 under both
        ([0, 0, 0, 0, 0, 7, 7, 7], 0, 7),  # zeros outvote 7 only when they vote
        ([0] * 7 + [2**63 + 1], 0, 2**63 + 1),  # a single non-zero voxel wins under dvid
        ([0, 0, 0, 0, 5, 5, 3, 3], 0, 3),  # dvid tie 2-2 -> the smaller non-zero label
        ([9, 9, 9, 9, 4, 4, 4, 4], 4, 4),  # 4-4 tie -> the smaller label
        ([0, 0, 0, 0, 6, 6, 6, 6], 0, 6),  # 4-4 tie with zero: tensorstore keeps 0 (smallest)
        ([2**64 - 1, 2**64 - 1, 1, 1, 0, 0, 0, 5], 0, 1),  # unsigned order: 2**64-1 is the largest
        ([8, 8, 8, 8, 8, 8, 8, 8], 8, 8),
    ],
)
def test_tie_and_zero_rules(values: list[int], tensorstore: int, dvid: int) -> None:
    for order in (values, values[::-1], sorted(values), sorted(values, reverse=True)):  # rules ignore voxel order
        volume = block(order)
        assert downsample_mode(volume, "tensorstore")[0, 0, 0] == tensorstore
        assert downsample_mode(volume, "dvid")[0, 0, 0] == dvid


def test_output_keeps_the_input_memory_order_and_other_layouts_are_copied() -> None:
    rng = np.random.default_rng(5)
    volume = random_volume(rng, (10, 12, 14), BIG, np.uint64, fortran=False)
    expected = reference_mode(volume, "tensorstore")
    assert downsample_mode(volume).flags.c_contiguous
    fortran = downsample_mode(np.asfortranarray(volume))
    assert fortran.flags.f_contiguous
    np.testing.assert_array_equal(fortran, expected)
    strided = np.zeros((10, 24, 14), np.uint64)[:, ::2]
    strided[...] = volume
    np.testing.assert_array_equal(downsample_mode(strided), expected)
    swapped = np.ascontiguousarray(volume.transpose(1, 0, 2)).transpose(1, 0, 2)  # neither C nor F
    np.testing.assert_array_equal(downsample_mode(swapped), expected)
    big_endian = volume.astype(">u8")
    np.testing.assert_array_equal(downsample_mode(big_endian), expected)


@pytest.mark.parametrize("shape", [(130, 130, 70), (1, 700, 801), (3, 513, 515)])
def test_threaded_slabs_equal_the_single_threaded_result(shape: tuple[int, int, int]) -> None:
    """Large enough to be split into slabs (thin first axes split the second axis too)."""
    rng = np.random.default_rng(11)
    volume = random_volume(rng, shape, [0, 1, 2**40], np.uint64, fortran=False)
    for rule in ("tensorstore", "dvid"):
        single = downsample_mode(volume, rule, threads=1)
        np.testing.assert_array_equal(downsample_mode(volume, rule, threads=3), single)
        np.testing.assert_array_equal(downsample_mode(np.asfortranarray(volume), rule, threads=2), single)


@pytest.mark.parametrize("dtype", [np.uint64, np.uint32])
def test_tensorstore_rule_equals_tensorstore_downsample_mode(dtype: type) -> None:
    ts = pytest.importorskip("tensorstore")
    rng = np.random.default_rng(13)
    labels = BIG if dtype is np.uint64 else [0, 1, 7, 2**31 + 3, 2**32 - 1]
    for shape in [(1, 1, 1), (3, 5, 7), (9, 4, 11), (17, 16, 15), (33, 2, 1)]:
        for fortran in (False, True):
            volume = random_volume(rng, shape, labels, dtype, fortran)
            expected = ts.downsample(ts.array(volume), [2, 2, 2], method="mode").read().result()
            np.testing.assert_array_equal(downsample_mode(volume, "tensorstore"), expected, err_msg=str(shape))


def test_source_box_is_the_parent_region_of_an_output_box_clipped_at_odd_edges() -> None:
    assert source_box(((0, 4), (0, 4), (0, 4)), (21, 18, 13)) == ((0, 8), (0, 8), (0, 8))
    assert source_box(((8, 11), (8, 9), (4, 7)), (21, 18, 13)) == ((16, 21), (16, 18), (8, 13))
    assert source_box(((10, 11), (0, 1), (6, 7)), (21, 18, 13)) == ((20, 21), (0, 2), (12, 13))
    with pytest.raises(ValueError, match="outside the downsampled extent"):
        source_box(((10, 12), (0, 1), (0, 1)), (21, 18, 13))


def test_empty_and_single_voxel_volumes() -> None:
    assert downsample_mode(np.zeros((0, 3, 4), np.uint64)).shape == (0, 2, 2)
    assert downsample_mode(np.zeros((5, 0, 1), np.uint32), "dvid").shape == (3, 0, 1)
    assert downsample_mode(np.full((1, 1, 1), 2**64 - 1, np.uint64)).tolist() == [[[2**64 - 1]]]


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="unknown mode rule"):
        downsample_mode(np.zeros((2, 2, 2), np.uint64), "median")
    with pytest.raises(ValueError, match="3-D"):
        downsample_mode(np.zeros((2, 2), np.uint64))
    with pytest.raises(TypeError, match="unsigned"):
        downsample_mode(np.zeros((2, 2, 2), np.int64))
    with pytest.raises(TypeError, match="unsigned"):
        downsample_mode(np.zeros((2, 2, 2), np.float32))


@pytest.fixture(scope="module")
def pinky40(shared_data: Path) -> np.ndarray:
    crackle = pytest.importorskip("crackle")
    path = shared_data / "volumes" / "pinky40-512.npy.ckl.gz"
    volume = crackle.decompress(gzip.open(path).read())
    assert volume.shape == (512, 512, 512) and volume.dtype == np.uint32
    return volume


def test_real_pinky40_cutout_matches_the_reference(pinky40: np.ndarray) -> None:
    """A 128^3 cut-out at odd offsets, plus an odd-shaped one, as uint64 and uint32, both rules."""
    cutout = np.asfortranarray(pinky40[101:229, 37:165, 250:378])
    odd = np.ascontiguousarray(pinky40[300:333, 400:431, 7:24])
    for volume in (cutout, odd):
        references = reference_modes(volume)
        for rule, expected in references.items():
            np.testing.assert_array_equal(downsample_mode(volume, rule), expected)
            np.testing.assert_array_equal(downsample_mode(volume.astype(np.uint64), rule), expected.astype(np.uint64))
    # the real data has mixed blocks, zero voxels and ties, so both rules and all paths are exercised
    assert 0 in cutout and (downsample_mode(cutout, "dvid") != downsample_mode(cutout, "tensorstore")).any()
