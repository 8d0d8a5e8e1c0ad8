"""Arrow Flight ingest: rows of a `flight` dataset arrive in one DoPut stream per table and go
through the same filter and atomic upload as the direct path (`connectome.ingest`)."""
