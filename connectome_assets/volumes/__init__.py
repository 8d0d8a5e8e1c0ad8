"""Segmentation volumes: DVID export-shards reading, the DVID block codec, neuroglancer output.

Never imports dagster.
"""

# The writers of a DVID-exported scale (volumes/s0.py); here so that the CLI can offer them
# without loading tensorstore.
WRITERS = ("transcode", "array")
