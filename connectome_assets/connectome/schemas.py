"""Canonical Arrow schemas every source model maps onto.

A source model yields exactly these columns and types; `dataset_id` is added by the
warehouse when rows are uploaded.
"""

from __future__ import annotations

import pyarrow as pa

ATTRIBUTES_TYPE = pa.map_(pa.string(), pa.string())

# Named text columns of a neuron; any other annotation column is kept in `attributes`.
NEURON_TEXT_COLUMNS: tuple[str, ...] = (
    "name",
    "type",
    "instance",
    "class",
    "superclass",
    "polarity",
    "soma_side",
    "status",
)

NEURON_SCHEMA = pa.schema(
    [pa.field("neuron_id", pa.uint64(), nullable=False)]
    + [pa.field(c, pa.string(), nullable=False) for c in NEURON_TEXT_COLUMNS]
    + [pa.field("attributes", ATTRIBUTES_TYPE, nullable=False)]
)

CONNECTION_SCHEMA = pa.schema(
    [
        pa.field("pre_neuron_id", pa.uint64(), nullable=False),
        pa.field("post_neuron_id", pa.uint64(), nullable=False),
        pa.field("weight", pa.uint32(), nullable=False),
        pa.field("synapse_class", pa.string(), nullable=False),
        pa.field("neuropil", pa.string(), nullable=False),
    ]
)
