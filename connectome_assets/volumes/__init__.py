"""Segmentation volumes: DVID export-shards reading, the DVID block codec, neuroglancer output.

Never imports dagster.
"""
