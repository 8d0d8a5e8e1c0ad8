"""Column normalisation at the source boundary, once (runbook: polarity may be Int8 or UTF-8).

Every source model passes its raw columns through these functions; nothing downstream
re-interprets a source's types.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from connectome_assets.connectome.errors import SourceError
from connectome_assets.connectome.schemas import ATTRIBUTES_TYPE

_UINT32_MAX = 2**32 - 1


def _plain(array: pa.Array | pa.ChunkedArray) -> pa.Array:
    """One contiguous array with dictionary encoding removed."""
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks() if array.num_chunks != 1 else array.chunk(0)
    if pa.types.is_dictionary(array.type):
        array = array.dictionary_decode()
    return array


def normalize_neuron_ids(array: pa.Array | pa.ChunkedArray, location: str, column: str) -> pa.Array:
    """Ids as UInt64 from int64, uint64, any integer or numeric-string column; anything else is an error."""
    array = _plain(array)
    if array.null_count:
        raise SourceError(location, f"column '{column}' has {array.null_count} missing ids")
    kind = array.type
    if pa.types.is_unsigned_integer(kind):
        return array.cast(pa.uint64())
    if pa.types.is_signed_integer(kind):
        if len(array) and pc.min(array).as_py() < 0:
            raise SourceError(location, f"column '{column}' has negative ids (smallest {pc.min(array).as_py()})")
        return array.cast(pa.uint64())
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        stripped = pc.utf8_trim_whitespace(array)
        numeric = pc.match_substring_regex(stripped, r"^[0-9]{1,20}$")
        if not pc.all(numeric).as_py() and len(array):
            bad = pc.filter(array, pc.invert(numeric))[0].as_py()
            raise SourceError(location, f"column '{column}' has a non-numeric id {bad!r}")
        try:
            return stripped.cast(pa.uint64())
        except pa.ArrowInvalid as exc:
            raise SourceError(location, f"column '{column}' has an id that does not fit in 64 bits ({exc})") from None
    raise SourceError(
        location, f"column '{column}' has type {kind}; neuron ids must be integers or numeric strings"
    )


def normalize_text(array: pa.Array | pa.ChunkedArray) -> pa.Array:
    """Any annotation column as non-null UTF-8: Int8 polarity becomes '1', null becomes ''."""
    array = _plain(array)
    if pa.types.is_large_string(array.type):
        array = array.cast(pa.string())
    elif not pa.types.is_string(array.type):
        if pa.types.is_floating(array.type):
            # NaN is pandas' "missing", not a value.
            array = pc.if_else(pc.is_nan(array), pa.scalar(None, array.type), array)
        if pa.types.is_nested(array.type):
            # Arrow cannot cast lists/structs to text (e.g. a soma location [x, y, z]): keep them as JSON.
            array = pa.array([None if v is None else json.dumps(v, default=str) for v in array.to_pylist()], pa.string())
        else:
            array = array.cast(pa.string())
    return pc.fill_null(array, "")


def normalize_weight(array: pa.Array | pa.ChunkedArray, location: str, column: str) -> pa.Array:
    """Synapse counts as UInt32: integers, or floats that are whole numbers; never negative."""
    array = _plain(array)
    if array.null_count:
        raise SourceError(location, f"column '{column}' has {array.null_count} missing weights")
    kind = array.type
    if not (pa.types.is_integer(kind) or pa.types.is_floating(kind)):
        raise SourceError(location, f"column '{column}' has type {kind}; weights must be numeric")
    if len(array) == 0:
        return array.cast(pa.uint32())
    low, high = pc.min_max(array).values()
    if low.as_py() < 0 or high.as_py() > _UINT32_MAX:
        raise SourceError(location, f"column '{column}' has weights outside 0..{_UINT32_MAX}")
    if pa.types.is_floating(kind) and not pc.all(pc.equal(array, pc.floor(array))).as_py():
        raise SourceError(location, f"column '{column}' has fractional weights; synapse counts are whole numbers")
    return array.cast(pa.uint32())


def build_attributes(columns: Mapping[str, pa.Array | pa.ChunkedArray], num_rows: int) -> pa.Array:
    """Annotation columns without a canonical slot, kept per neuron as a map (empty values left out)."""
    if not columns:
        offsets = pa.array(np.zeros(num_rows + 1, dtype=np.int32))
        return pa.MapArray.from_arrays(offsets, pa.array([], pa.string()), pa.array([], pa.string()), type=ATTRIBUTES_TYPE)
    names = list(columns)
    rows = np.arange(num_rows, dtype=np.int64)
    long = pa.concat_tables(
        [
            pa.table(
                {
                    "row": rows,
                    "key": pa.array(np.full(num_rows, name, dtype=object), pa.string()),
                    "value": normalize_text(columns[name]),
                }
            )
            for name in names
        ]
    )
    long = long.filter(pc.not_equal(long["value"], ""))
    # A stable sort by row keeps the columns in source order inside each neuron's map.
    long = long.take(pc.sort_indices(long["row"]))
    counts = np.bincount(long["row"].to_numpy(), minlength=num_rows)
    offsets = np.zeros(num_rows + 1, dtype=np.int32)
    np.cumsum(counts, out=offsets[1:])
    return pa.MapArray.from_arrays(
        pa.array(offsets), long["key"].combine_chunks(), long["value"].combine_chunks(), type=ATTRIBUTES_TYPE
    )
