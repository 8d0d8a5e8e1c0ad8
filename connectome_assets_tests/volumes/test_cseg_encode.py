"""The compressed_segmentation encoder from uint64 voxels (`encode_chunk`, the downres path): byte for
byte the `compressed-segmentation` package's encoding, and byte for byte what tensorstore stores."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from connectome_assets.volumes.block_codec import decode_block
from connectome_assets.volumes.cseg_transcode import encode_chunk
from connectome_assets.volumes.downres import downsample_mode
from connectome_assets.volumes.precomputed import destination_url, info_from_spec, open_scale, scales_of, write_info
from connectome_assets.volumes.sharding import grid_bits
from connectome_assets.volumes.synthetic import multiscale_spec, neurite_volume
from connectome_assets_tests.volumes.test_cseg_transcode import EDGE_EXTENTS, stored_chunks

BITS = {1: 0, 2: 1, 3: 2, 4: 2, 5: 4, 16: 4, 17: 8, 256: 8, 257: 16, 512: 16}


def package_encode(voxels: np.ndarray) -> bytes | None:
    """The `compressed-segmentation` package (neuroglancer's encoder) on an (x, y, z) chunk; None if all 0."""
    import compressed_segmentation

    if not voxels.any():
        return None
    return compressed_segmentation.compress(np.asfortranarray(voxels), block_size=(8, 8, 8), order="F")


def layouts(voxels: np.ndarray) -> list[np.ndarray]:
    """One (x, y, z) chunk in the layouts callers hand over: Fortran order, C order, and a strided view."""
    padded = np.zeros((voxels.shape[0] + 3, voxels.shape[1], voxels.shape[2] + 1), np.uint64, order="F")
    padded[1 : voxels.shape[0] + 1, :, 1:] = voxels
    return [np.asfortranarray(voxels), np.ascontiguousarray(voxels), padded[1 : voxels.shape[0] + 1, :, 1:]]


def assert_same(voxels: np.ndarray) -> bytes | None:
    expected = package_encode(voxels)
    for laid_out in layouts(voxels):
        got = encode_chunk(laid_out)
        assert got == expected, f"shape {voxels.shape}, strides {laid_out.strides}: {None if got is None else len(got)} bytes, expected {None if expected is None else len(expected)}"
    return expected


def downsampled_chunks(real_blocks: list) -> list[np.ndarray]:
    """Scale 1 chunks of the real shard: each 2x2x2 group of its decoded 64³ blocks (absent ones 0)
    downsampled by mode, as `pyramid.write_downres_shard` computes them."""
    groups = defaultdict(list)
    for (x, y, z), block, labels in real_blocks:
        groups[(x // 2, y // 2, z // 2)].append(((x % 2, y % 2, z % 2), block, labels))
    chunks = []
    for children in groups.values():
        region = np.zeros((128, 128, 128), np.uint64, order="F")
        for (x, y, z), block, labels in children:
            region[64 * x : 64 * x + 64, 64 * y : 64 * y + 64, 64 * z : 64 * z + 64] = decode_block(block, labels).transpose(2, 1, 0)
        chunks.append(downsample_mode(region))
    return chunks


def test_the_real_shard_and_its_downsampled_chunks_equal_the_package(real_blocks: list) -> None:
    for _, block, labels in real_blocks:
        for mapped in (labels, None):
            voxels = decode_block(block, mapped).transpose(2, 1, 0)  # the (x, y, z) view of a (z, y, x) array
            assert encode_chunk(voxels) == package_encode(voxels)
    chunks = downsampled_chunks(real_blocks)
    assert len(chunks) > 40
    rng = np.random.default_rng(8)
    for chunk in chunks:
        assert assert_same(chunk) is not None
        ex, ey, ez = (int(n) for n in rng.integers(1, 65, 3))
        assert_same(chunk[:ex, :ey, :ez])  # clipped at the volume's edge
    region = np.zeros((128, 128, 128), np.uint64, order="F")
    for i, chunk in enumerate(chunks[:8]):
        x, y, z = 64 * (i & 1), 64 * (i >> 1 & 1), 64 * (i >> 2)
        region[x : x + 64, y : y + 64, z : z + 64] = chunk
    assert_same(downsample_mode(region))  # a scale 2 chunk: coarser, more labels a block


@pytest.mark.parametrize("labels_per_block", sorted(BITS))
def test_every_bit_width_and_clipped_shapes(labels_per_block: int) -> None:
    """Random blocks of exactly 1..512 distinct labels (0 to 16 bits), small and 64-bit labels,
    whole chunks and clipped ones (blocks cut inside, chunks of one voxel)."""
    rng = np.random.default_rng(labels_per_block)
    volume = np.empty((64, 64, 64), np.uint64)
    for x in range(0, 64, 8):
        for y in range(0, 64, 8):
            for z in range(0, 64, 8):
                labels = rng.permutation(np.unique(rng.integers(1, 2**64 - 1, 2 * labels_per_block, np.uint64, endpoint=True))[:labels_per_block]) if (x + y) % 16 else np.arange(labels_per_block, dtype=np.uint64) + 1
                values = np.concatenate([labels, rng.choice(labels, 512 - labels_per_block)])  # every label at least once
                volume[x : x + 8, y : y + 8, z : z + 8] = rng.permutation(values).reshape(8, 8, 8)
    got = assert_same(volume)
    assert got is not None and np.frombuffer(got, "<u4")[1] >> 24 == BITS[labels_per_block]
    for extent in EDGE_EXTENTS[1:] + [(64, 64, 1), (5, 64, 64)]:
        assert_same(volume[: extent[0], : extent[1], : extent[2]])


def test_zeros_solid_chunks_and_shared_tables() -> None:
    assert encode_chunk(np.zeros((64, 64, 64), np.uint64)) is None
    assert encode_chunk(np.zeros((3, 1, 7), np.uint64, order="F")) is None
    one = np.zeros((64, 64, 64), np.uint64)
    one[63, 0, 17] = 2**64 - 1  # the largest label, in one voxel
    assert assert_same(one) is not None
    solid = np.full((20, 64, 9), 2**40 + 3, np.uint64)
    got = assert_same(solid)
    assert got is not None and len(got) == 4 * (1 + 2 * 3 * 8 * 2 + 2)  # one table, shared by every block
    # The same tables in other voxel orders, and an edge block whose voxels inside hold fewer labels.
    rng = np.random.default_rng(3)
    volume = rng.choice(np.array([10, 20, 30], np.uint64), (64, 64, 64))
    volume[:, :, 40:] = rng.choice(np.array([20, 10], np.uint64), (64, 64, 24))
    volume[60:, :, :] = 30
    assert_same(volume)
    assert_same(volume[:61, :62, :41])


def test_not_a_chunk() -> None:
    for bad in (np.zeros((64, 64, 64), np.uint32), np.zeros((65, 64, 64), np.uint64), np.zeros((64, 64), np.uint64), np.zeros((0, 4, 4), np.uint64)):
        with pytest.raises(ValueError, match="^a compressed_segmentation chunk is a 3-D uint64 array of at most 64 voxels a side"):
            encode_chunk(bad)


def test_downsampled_edge_chunks_equal_what_tensorstore_stores(tmp_path: Path) -> None:
    """A scale of 200 x 130 x 75 voxels (x, y, z) written through tensorstore's neuroglancer_precomputed
    driver, read back raw through its sharded kvstore: each stored chunk is encode_chunk of its voxels
    (clipped at 8, 2 and 11 voxels), nothing where they are all 0."""
    size = (200, 130, 75)
    info = info_from_spec(multiscale_spec(size, 1), "edges.json")
    dest = destination_url(str(tmp_path / "out"))
    write_info(dest, info)
    scale = scales_of(info)[0]
    volume = downsample_mode(neurite_volume((150, 260, 400), neurites=90, seed=6).transpose(2, 1, 0))  # (x, y, z)
    volume[:, :, 60:] = 0  # whole edge chunks of zeros
    volume[:, 64:, 64:] = np.where(volume[:, 64:, 64:] % 3 == 0, 0, volume[:, 64:, 64:])
    store = open_scale(dest, 0)
    store[:, :, :, 0].write(volume).result()
    chunks = [(x, y, z) for x in range(4) for y in range(3) for z in range(2)]
    stored = stored_chunks(dest, scale.key, info["scales"][0]["sharding"], chunks, grid_bits(scale.grid))
    for chunk in chunks:
        voxels = volume[tuple(slice(64 * c, 64 * c + 64) for c in chunk)]
        assert encode_chunk(voxels) == stored[chunk], (chunk, voxels.shape)
    assert sum(stored[chunk] is None for chunk in chunks) >= 2
