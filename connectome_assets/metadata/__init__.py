"""Metadata database (SQLite locally, PostgreSQL in production): datasets and upload state."""
