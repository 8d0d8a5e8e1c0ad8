"""Exports stage: feature_exports (Parquet in the object store, blocking row-count check) and article_cache."""
