"""Column normalisation at the source boundary: ids, text (polarity), weights, attributes."""

from __future__ import annotations

import pyarrow as pa
import pytest

from connectome_assets.connectome.errors import SourceError
from connectome_assets.connectome.normalize import build_attributes, normalize_neuron_ids, normalize_text, normalize_weight
from connectome_assets.connectome.schemas import ATTRIBUTES_TYPE

LOCATION = "/data/release/body-annotations.feather"
U64_MAX = 2**64 - 1


# ids -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("array", "expected"),
    [
        pytest.param(pa.array([0, 7, 2**63 - 1], pa.int64()), [0, 7, 2**63 - 1], id="int64"),
        pytest.param(pa.array([0, 2**63, U64_MAX], pa.uint64()), [0, 2**63, U64_MAX], id="uint64"),
        pytest.param(pa.array([5, 2**31 - 1], pa.int32()), [5, 2**31 - 1], id="int32"),
        pytest.param(pa.array([3, 255], pa.uint8()), [3, 255], id="uint8"),
        pytest.param(pa.array(["12", " 34", "56 ", "\t78\n", str(U64_MAX)]), [12, 34, 56, 78, U64_MAX], id="numeric-strings-with-spaces"),
        pytest.param(pa.array(["9", " 10 "], pa.large_string()), [9, 10], id="large-string"),
        pytest.param(pa.array([4, 2, 4, 2], pa.int64()).dictionary_encode(), [4, 2, 4, 2], id="dictionary-int64"),
        pytest.param(pa.array(["720575940621039145", "1", "1"]).dictionary_encode(), [720575940621039145, 1, 1], id="dictionary-string"),
        pytest.param(pa.chunked_array([pa.array([1, 2], pa.int64()), pa.array([3], pa.int64())]), [1, 2, 3], id="chunked"),
        pytest.param(pa.array([], pa.int64()), [], id="empty"),
    ],
)
def test_ids_become_uint64(array, expected):
    result = normalize_neuron_ids(array, LOCATION, "bodyId")
    assert isinstance(result, pa.Array)
    assert result.type == pa.uint64()
    assert result.null_count == 0
    assert result.to_pylist() == expected


@pytest.mark.parametrize(
    ("array", "problem"),
    [
        pytest.param(pa.array([1, -3, 2], pa.int64()), "negative", id="negative"),
        pytest.param(pa.array([-1], pa.int8()).dictionary_encode(), "negative", id="negative-dictionary"),
        pytest.param(pa.array([1.0, 2.0], pa.float64()), "double", id="float64"),
        pytest.param(pa.array([1.5], pa.float32()), "float", id="float32"),
        pytest.param(pa.array([1, None, 3], pa.int64()), "missing", id="null-int"),
        pytest.param(pa.array(["1", None]), "missing", id="null-string"),
        pytest.param(pa.array(["12", "12a"]), "non-numeric id '12a'", id="non-numeric"),
        pytest.param(pa.array(["-5"]), "non-numeric", id="negative-string"),
        pytest.param(pa.array(["1.0"]), "non-numeric", id="decimal-string"),
        pytest.param(pa.array([""]), "non-numeric", id="empty-string"),
        pytest.param(pa.array([str(2**64)]), "64 bits", id="overflow-string"),
        pytest.param(pa.array([True]), "bool", id="bool"),
    ],
)
def test_bad_ids_are_source_errors_naming_the_column(array, problem):
    with pytest.raises(SourceError) as caught:
        normalize_neuron_ids(array, LOCATION, "bodyId")
    error = caught.value
    assert error.location == LOCATION
    assert "'bodyId'" in error.problem
    assert problem in error.problem
    assert str(error).startswith(f"{LOCATION}: ")
    assert "\n" not in str(error)


# text / polarity ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("array", "expected"),
    [
        pytest.param(pa.array([1, -1, None, 0], pa.int8()), ["1", "-1", "", "0"], id="int8-polarity"),
        pytest.param(pa.array(["excitatory", "inhibitory", None, "ünïcødé"]), ["excitatory", "inhibitory", "", "ünïcødé"], id="utf8"),
        pytest.param(pa.array(["a", None], pa.large_string()), ["a", ""], id="large-string"),
        pytest.param(pa.array(["R", "L", None, "R"]).dictionary_encode(), ["R", "L", "", "R"], id="dictionary-string"),
        pytest.param(pa.array([1, -1, 1], pa.int8()).dictionary_encode(), ["1", "-1", "1"], id="dictionary-int8"),
        pytest.param(pa.array([0.5, float("nan"), None]), ["0.5", "", ""], id="float-nan-is-missing"),
        pytest.param(pa.chunked_array([pa.array(["x"]), pa.array([None], pa.string())]), ["x", ""], id="chunked"),
        pytest.param(pa.array([True, False, None]), ["true", "false", ""], id="bool"),
        pytest.param(pa.array([[1, 2, 3], None, []], pa.list_(pa.int64())), ["[1, 2, 3]", "", "[]"], id="list-as-json"),
        pytest.param(pa.array([{"x": 1, "y": "a"}, None]), ['{"x": 1, "y": "a"}', ""], id="struct-as-json"),
    ],
)
def test_text_columns_become_non_null_utf8(array, expected):
    result = normalize_text(array)
    assert result.type == pa.string()
    assert result.null_count == 0
    assert result.to_pylist() == expected


# weights -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("array", "expected"),
    [
        pytest.param(pa.array([1, 0, 2**32 - 1], pa.int64()), [1, 0, 2**32 - 1], id="int64"),
        pytest.param(pa.array([3, 4], pa.int32()), [3, 4], id="int32"),
        pytest.param(pa.array([3, 200], pa.uint8()), [3, 200], id="uint8"),
        pytest.param(pa.array([1.0, 25.0, 0.0], pa.float64()), [1, 25, 0], id="whole-floats"),
        pytest.param(pa.array([2.0], pa.float32()), [2], id="whole-float32"),
        pytest.param(pa.array([], pa.float64()), [], id="empty"),
    ],
)
def test_weights_become_uint32(array, expected):
    result = normalize_weight(array, LOCATION, "weight")
    assert result.type == pa.uint32()
    assert result.to_pylist() == expected


@pytest.mark.parametrize(
    ("array", "problem"),
    [
        pytest.param(pa.array([1.0, 2.5]), "fractional", id="fractional"),
        pytest.param(pa.array([3, -1], pa.int64()), "outside", id="negative"),
        pytest.param(pa.array([-2.0]), "outside", id="negative-float"),
        pytest.param(pa.array([2**32], pa.int64()), "outside", id="too-large"),
        pytest.param(pa.array([1, None], pa.int32()), "missing", id="null"),
        pytest.param(pa.array(["3"]), "type string", id="string"),
        pytest.param(pa.array([float("nan")]), "weight", id="nan"),
    ],
)
def test_bad_weights_are_source_errors_naming_the_column(array, problem):
    with pytest.raises(SourceError) as caught:
        normalize_weight(array, LOCATION, "syn_count")
    assert caught.value.location == LOCATION
    assert "'syn_count'" in caught.value.problem
    assert problem in caught.value.problem


# attributes ----------------------------------------------------------------------------------
def test_build_attributes_keeps_column_order_and_drops_empty_values():
    columns = {
        "zeta": pa.array(["z0", "", None, "z3"]),
        "alpha": pa.array([None, "a1", "a2", "a3"]),
        "group": pa.array([10, None, 12, 13], pa.int64()),
        "side": pa.array(["L", "R", None, ""]).dictionary_encode(),
    }
    result = build_attributes(columns, 4)
    assert result.type == ATTRIBUTES_TYPE
    assert [list(row) for row in result.to_pylist()] == [
        [("zeta", "z0"), ("group", "10"), ("side", "L")],
        [("alpha", "a1"), ("side", "R")],
        [("alpha", "a2"), ("group", "12")],
        [("zeta", "z3"), ("alpha", "a3"), ("group", "13")],
    ]


def test_build_attributes_without_columns_or_values_gives_empty_maps():
    assert build_attributes({}, 3).to_pylist() == [[], [], []]
    assert build_attributes({"x": pa.array([None, ""], pa.string())}, 2).to_pylist() == [[], []]
    empty = build_attributes({"x": pa.array([], pa.string())}, 0)
    assert len(empty) == 0
    assert empty.type == ATTRIBUTES_TYPE


def test_build_attributes_keeps_order_over_many_rows():
    n = 5000
    columns = {name: pa.array([f"{name}{i}" if (i + k) % 3 else None for i in range(n)]) for k, name in enumerate("cab")}
    rows = build_attributes(columns, n).to_pylist()
    for i, row in enumerate(rows):
        expected = [(name, f"{name}{i}") for k, name in enumerate("cab") if (i + k) % 3]
        assert row == expected
