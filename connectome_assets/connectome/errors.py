"""Errors a person can act on: each names the file (or catalog entry) and the problem."""

from __future__ import annotations


class SourceError(ValueError):
    """Bad input found before anything was written: the previous good data stays as it was."""

    def __init__(self, location: str, problem: str) -> None:
        self.location = location
        self.problem = problem
        super().__init__(f"{location}: {problem}")


class CatalogError(SourceError):
    """A dataset catalog entry that is missing, unreadable or names something unknown."""
