"""Fixtures of the volumes tests: the real DVID reference data in ../shared/data/dvid."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import zstandard

from connectome_assets.volumes.shard_reader import DvidShardReader

STEM = "30720_24576_28672"  # the real 258-block male CNS export shard


@pytest.fixture(scope="module")
def dvid(shared_data: Path) -> Path:
    return shared_data / "dvid"


@pytest.fixture(scope="module")
def real_blocks(dvid: Path) -> list[tuple[tuple[int, int, int], bytes, np.ndarray]]:
    """The real shard's 258 blocks after zstd, with their agglomerated labels."""
    reader = DvidShardReader(dvid / f"{STEM}.arrow", dvid / f"{STEM}-newformat.csv")
    unzstd = zstandard.ZstdDecompressor()
    records = [reader.read(chunk) for chunk in reader.chunks]
    return [(record.coordinate, unzstd.decompress(record.compressed_block), record.labels) for record in records]
