"""The endpoint filter's drop reasons as the platform records and shows them (the keys of
`EndpointFilterStats.summary()` and of a Flight server's answer). Apart from the filter, which
loads numba, so that the Flight client can print an answer without loading it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

DROP_REASONS = ("dropped_pre_missing", "dropped_post_missing", "dropped_both_missing")


def dropped_by_reason(summary: Mapping[str, Any]) -> str:
    """'1,204 pre missing, 3 post missing, 0 both missing' from the filter's counts (`summary()` or a
    Flight server's answer)."""
    return ", ".join(f"{summary[key]:,} {key.removeprefix('dropped_').replace('_', ' ')}" for key in DROP_REASONS if key in summary)
