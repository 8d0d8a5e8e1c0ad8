"""A DVID block -> the neuroglancer compressed_segmentation bytes of its chunk.

REFERENCE implementation: decode the block to uint64 voxels, clip, and encode with the
`compressed-segmentation` package. It defines the bytes (those tensorstore's
`neuroglancer_precomputed` driver stores: one channel, uint64, 8³ blocks, an edge chunk encoded
at its clipped shape) and is replaced by the compiled transcoder, which never builds the voxels.
"""

from __future__ import annotations

import compressed_segmentation
import numpy as np

from connectome_assets.volumes.block_codec import BlockBytes, decode_block


def transcode_chunk(data: BlockBytes, mapped_table: np.ndarray | None, extent: tuple[int, int, int] = (64, 64, 64)) -> bytes | None:
    """The neuroglancer compressed_segmentation bytes (block size 8³, one channel, uint64) of the chunk
    a DVID block (zstd already removed; `data` as block_codec takes it) becomes, with the block's label table
    replaced by `mapped_table` (labels) or kept (None: supervoxels). `extent` (x, y, z) is the chunk clipped to
    the volume (a partial edge chunk); the bytes are exactly what tensorstore's neuroglancer_precomputed driver
    stores for that chunk. None when every voxel of the (clipped) chunk is 0 (the array path writes nothing then)."""
    voxels = decode_block(data, mapped_table)  # (z, y, x)
    ex, ey, ez = extent
    if not (0 < ex <= voxels.shape[2] and 0 < ey <= voxels.shape[1] and 0 < ez <= voxels.shape[0]):
        raise ValueError(f"extent {tuple(extent)} does not fit a block of {voxels.shape[::-1]} voxels (x, y, z)")
    clipped = voxels[:ez, :ey, :ex]
    if not clipped.any():
        return None
    # x fastest, as the format stores voxels: the (x, y, z) view of a (z, y, x) C-order array is Fortran order.
    return compressed_segmentation.compress(np.asfortranarray(clipped.transpose(2, 1, 0)), block_size=(8, 8, 8), order="F")
