"""Python clients of the registry: `RegistryClient` over HTTP, `LocalRegistryClient` in-process.

Both have the same methods and return the same documents; errors are the same `RegistryError`
classes (an HTTP error is turned back into the class of its status, with the server's sentence).
"""

from __future__ import annotations

from typing import Any

import httpx
from pydantic import ValidationError

from connectome_assets.registry import errors
from connectome_assets.registry.schemas import (
    AccessGrant,
    AccessRequest,
    AuditEntry,
    Lineage,
    Registration,
    StatusChange,
    TableInfo,
    TableVersion,
    validation_problems,
)
from connectome_assets.registry.service import Registry

_ERRORS = {cls.status: cls for cls in (errors.BadRequest, errors.Unauthorized, errors.Forbidden, errors.NotFound, errors.Conflict, errors.Invalid, errors.QuotaExceeded, errors.Unavailable)}


def _registration(fields: Registration | dict[str, Any]) -> Registration:
    if isinstance(fields, Registration):
        return fields
    try:
        return Registration.model_validate(fields)
    except ValidationError as exc:
        raise errors.Invalid(f"registration of {fields.get('name')!r} is malformed: {validation_problems(exc.errors())}") from None


class RegistryClient:
    """The registry over HTTP with a bearer token."""

    def __init__(self, base_url: str, token: str, timeout: float = 60.0, transport: httpx.BaseTransport | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(base_url=self.base_url, headers={"Authorization": f"Bearer {token}"}, timeout=timeout, transport=transport)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._http.request(method, path, **kwargs)
        if response.status_code >= 400:
            try:
                body = response.json()
            except ValueError:
                body = {"detail": response.text}
            raise _ERRORS.get(response.status_code, errors.RegistryError)(
                f"registry at {self.base_url} answered {response.status_code}: {body.get('detail')}", detail=body.get("error")
            )
        return response.json()

    def register(self, fields: Registration | dict[str, Any]) -> TableVersion:
        body = _registration(fields).model_dump(mode="json", by_alias=True, exclude_unset=True)
        return TableVersion.model_validate(self._call("POST", "/v1/tables", json=body))

    def search(self, **filters: Any) -> list[TableVersion]:
        params = {("q" if k == "text" else k): v for k, v in filters.items() if v is not None}
        return [TableVersion.model_validate(v) for v in self._call("GET", "/v1/tables", params=params)]

    def show(self, name: str) -> TableInfo:
        return TableInfo.model_validate(self._call("GET", f"/v1/tables/{name}"))

    def lineage(self, name: str, version: int | None = None, direction: str = "both", depth: int = 8) -> Lineage:
        params = {"direction": direction, "depth": depth} | ({"version": version} if version is not None else {})
        return Lineage.model_validate(self._call("GET", f"/v1/tables/{name}/lineage", params=params))

    def set_status(self, name: str, version: int, status: str, superseded_by: str | None = None) -> TableVersion:
        body = StatusChange(version=version, status=status, superseded_by=superseded_by).model_dump(mode="json", exclude_none=True)
        return TableVersion.model_validate(self._call("POST", f"/v1/tables/{name}/status", json=body))

    def access(self, name: str, version: int | None = None) -> AccessGrant:
        body = AccessRequest(version=version).model_dump(mode="json", exclude_none=True)
        return AccessGrant.model_validate(self._call("POST", f"/v1/tables/{name}/access", json=body))

    def audit(self, user: str | None = None, action: str | None = None, limit: int = 100) -> list[AuditEntry]:
        params = {k: v for k, v in {"user": user, "action": action, "limit": limit}.items() if v is not None}
        return [AuditEntry.model_validate(e) for e in self._call("GET", "/v1/audit", params=params)]


class LocalRegistryClient:
    """The registry service in this process, acting as one user (the embedded default: no server)."""

    def __init__(self, registry: Registry, user: str) -> None:
        self.registry = registry
        self.user = user

    def close(self) -> None:
        self.registry.store.dispose()

    def __enter__(self) -> LocalRegistryClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def register(self, fields: Registration | dict[str, Any]) -> TableVersion:
        return self.registry.register(self.registry.principal(self.user), _registration(fields))

    def search(self, **filters: Any) -> list[TableVersion]:
        return self.registry.search(self.registry.principal(self.user), **filters)

    def show(self, name: str) -> TableInfo:
        return self.registry.show(self.registry.principal(self.user), name)

    def lineage(self, name: str, version: int | None = None, direction: str = "both", depth: int = 8) -> Lineage:
        return self.registry.lineage(self.registry.principal(self.user), name, version, direction, depth)

    def set_status(self, name: str, version: int, status: str, superseded_by: str | None = None) -> TableVersion:
        change = StatusChange(version=version, status=status, superseded_by=superseded_by)
        return self.registry.set_status(self.registry.principal(self.user), name, change)

    def access(self, name: str, version: int | None = None) -> AccessGrant:
        return self.registry.issue_access(self.registry.principal(self.user), name, AccessRequest(version=version))

    def audit(self, user: str | None = None, action: str | None = None, limit: int = 100) -> list[AuditEntry]:
        return self.registry.audit_log(self.registry.principal(self.user), user=user, action=action, limit=limit)
