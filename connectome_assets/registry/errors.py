"""Registry errors: each maps to one HTTP status and carries one sentence a person can act on."""

from __future__ import annotations

from typing import Any


class RegistryError(Exception):
    """Base class; `status` is the HTTP status the API answers with, `detail` optional structured data."""

    status = 400

    def __init__(self, message: str, detail: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail


class BadRequest(RegistryError):
    status = 400


class Unauthorized(RegistryError):
    status = 401


class Forbidden(RegistryError):
    status = 403


class NotFound(RegistryError):
    status = 404


class Conflict(RegistryError):
    status = 409


class Invalid(RegistryError):
    """The request is well-formed but its content cannot be accepted (unknown format, missing data, schema diff)."""

    status = 422


class QuotaExceeded(RegistryError):
    status = 429


class Unavailable(RegistryError):
    """The registry cannot do it as configured (for example, no credentials to sign gs:// URLs)."""

    status = 503
