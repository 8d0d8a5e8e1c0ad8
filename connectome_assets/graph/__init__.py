"""Graph products computed from the canonical edge stream (no dagster imports)."""
