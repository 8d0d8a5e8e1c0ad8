"""Neuroglancer sharding math against TensorStore's vectors, the real male CNS spec and shard."""

from __future__ import annotations

import json
import random
import struct
from pathlib import Path

import mmh3
import numpy as np
import pytest

from connectome_assets.volumes.shard_reader import DvidShardReader
from connectome_assets.volumes.sharding import (
    ShardingSpec,
    chunk_grid,
    compressed_morton_code,
    compressed_morton_codes,
    grid_bits,
    murmurhash3_x86_128_low64,
    shard_and_minishard,
    shard_file_name,
    shard_origin,
    shard_shape,
)

STEM = "30720_24576_28672"


@pytest.fixture(scope="module")
def mcns(shared_data: Path) -> dict:
    return json.loads((shared_data / "dvid" / "mcns-ng-specs.json").read_text())


@pytest.mark.parametrize(
    "chunk, code",
    [((0, 0, 0), 0), ((1, 0, 0), 1), ((0, 1, 0), 2), ((2, 0, 1), 0b1100), ((2, 3, 0), 0b11010), ((9, 2, 1), 0b1010101)],
)
def test_compressed_morton_code_tensorstore_vectors(chunk: tuple[int, int, int], code: int) -> None:
    assert compressed_morton_code(chunk, (4, 2, 1)) == code
    assert compressed_morton_codes(np.array([chunk]), (4, 2, 1)).tolist() == [code]


def test_grid_bits() -> None:
    assert grid_bits(chunk_grid((79, 80, 144), (20, 20, 12))) == (2, 2, 4)
    assert grid_bits(chunk_grid((94088, 78317, 134576), (64, 64, 64))) == (11, 11, 12)
    assert grid_bits((1, 1, 1)) == (0, 0, 0)


def test_murmurhash_vectors_and_peer() -> None:
    assert murmurhash3_x86_128_low64(0) == 0x4772B084E028AE41
    assert murmurhash3_x86_128_low64(1) == 0xE8BD67D616D4CE9A
    assert murmurhash3_x86_128_low64(14) == 0xB39A89B764A2E29D
    rng = random.Random(7)
    for value in [2**64 - 1, 2**63] + [rng.getrandbits(64) for _ in range(500)]:
        peer = mmh3.hash128(struct.pack("<Q", value), seed=0, x64arch=False, signed=False) & (2**64 - 1)
        assert murmurhash3_x86_128_low64(value) == peer


def test_worked_example() -> None:
    code = compressed_morton_code((3, 2, 1), grid_bits(chunk_grid((300, 200, 100), (64, 64, 64))))
    assert code == 29
    assert shard_and_minishard(code, ShardingSpec(1, 2, 3)) == (3, 2)
    assert shard_and_minishard(code, ShardingSpec(1, 2, 3, "murmurhash3_x86_128")) == (7, 1)


@pytest.mark.parametrize("shard, bits, name", [(25029, 19, "061c5.shard"), (0xFF, 12, "0ff.shard"), (42, 8, "2a.shard"), (0, 0, "0.shard")])
def test_shard_file_names(shard: int, bits: int, name: str) -> None:
    assert shard_file_name(shard, bits) == name


def test_shard_shapes_of_the_male_cns_spec(mcns: dict) -> None:
    shapes = [shard_shape(chunk_grid(s["size"], s["chunk_sizes"][0]), ShardingSpec.from_info(s["sharding"])) for s in mcns["scales"]]
    assert shapes[:6] == [(32, 32, 32)] * 6
    assert shapes[6] == (23, 20, 32)
    for scale, shape in zip(mcns["scales"][7:], shapes[7:]):
        assert scale["sharding"]["shard_bits"] == 0 and shape == chunk_grid(scale["size"], (64, 64, 64))
    assert shard_shape((2, 4, 8), ShardingSpec(1, 2, 3)) == (2, 2, 2)


def test_every_chunk_of_the_real_shard_maps_to_shard_4073(mcns: dict, shared_data: Path) -> None:
    scale = mcns["scales"][1]
    grid = chunk_grid(scale["size"], scale["chunk_sizes"][0])
    spec = ShardingSpec.from_info(scale["sharding"])
    shard = shared_data / "dvid" / f"{STEM}.arrow"
    chunks = np.array(DvidShardReader(shard, shard.with_name(STEM + ".csv")).chunks)
    codes = compressed_morton_codes(chunks, grid_bits(grid))
    assert compressed_morton_code((509, 413, 469), grid_bits(grid)) == 133_494_727
    assert shard_and_minishard(133_494_727, spec) == (4073, 59)
    assert {shard_and_minishard(int(c), spec)[0] for c in codes} == {4073}
    assert shard_file_name(4073, spec.shard_bits) == "0fe9.shard"
    origin = np.array(shard_origin(4073, grid, spec))
    assert tuple(origin * 64) == (30720, 24576, 28672)  # DVID names the file by this origin
    shape = np.array(shard_shape(grid, spec))
    assert np.all((chunks >= origin) & (chunks < origin + shape))


def test_unsupported_specs_are_refused() -> None:
    with pytest.raises(ValueError, match="unsupported sharding type"):
        ShardingSpec.from_info({"@type": "other", "preshift_bits": 0, "minishard_bits": 0, "shard_bits": 0})
    with pytest.raises(ValueError, match="only under the identity hash"):
        shard_origin(0, (4, 4, 4), ShardingSpec(0, 1, 1, "murmurhash3_x86_128"))


@pytest.mark.parametrize("bits", [(4, 2, 1), (11, 11, 12), (0, 3, 1), (0, 0, 0)])
def test_morton_decode_inverts_the_chunk_ids(bits: tuple[int, int, int]) -> None:
    from connectome_assets.volumes.sharding import morton_decode

    rng = np.random.default_rng(sum(bits))
    chunks = np.stack([rng.integers(0, 2**b, 500) for b in bits], axis=1)
    assert np.array_equal(morton_decode(compressed_morton_codes(chunks, bits), bits), chunks)


@pytest.mark.parametrize("hash_name", ["identity", "murmurhash3_x86_128"])
def test_vectorised_shard_numbers_equal_the_scalar_ones(hash_name: str) -> None:
    from connectome_assets.volumes.sharding import shards_of_codes

    spec = ShardingSpec(preshift_bits=3, minishard_bits=4, shard_bits=7, hash=hash_name)
    codes = np.random.default_rng(1).integers(0, 2**40, 300, dtype=np.uint64)
    assert shards_of_codes(codes, spec).tolist() == [shard_and_minishard(int(c), spec)[0] for c in codes.tolist()]
