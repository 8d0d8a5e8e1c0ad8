"""The Dagster layer ONLY: thin definitions that call the library. No domain logic here."""
