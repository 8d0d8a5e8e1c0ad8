"""The registry's HTTP API (FastAPI; the OpenAPI document is at `/openapi.json`, the docs at `/docs`).

Routes are thin: they authenticate, call `Registry`, and turn `RegistryError`s into their status
with `{"detail": sentence, "error": structured detail}`. A malformed body is refused before the
registry is called, and is audited here.
"""

from __future__ import annotations

from typing import Literal

import sqlalchemy as sa
from pydantic import BaseModel
from fastapi import Depends, FastAPI, Query, Request, Security
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from connectome_assets.registry.errors import Invalid, RegistryError
from connectome_assets.registry.file_urls import ROUTE
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
from connectome_assets.registry.service import Audit, Principal, Registry

_bearer = HTTPBearer(auto_error=False, description="A registry token (`connectome registry token create USER`).")


def _client(request: Request) -> str | None:
    return request.client.host if request.client else None


def _action(request: Request) -> str:
    route = request.scope.get("route")
    return getattr(route, "name", None) or request.url.path


def _json(document: BaseModel | list[BaseModel], status_code: int = 200) -> Response:
    """The registry's documents serialized once. They were built and validated by the registry; returned
    as models, FastAPI would dump, re-validate and serialize them again (the route's `response_model`
    still documents the shape in the OpenAPI schema).
    """
    if isinstance(document, list):
        body = b"[" + b",".join(d.model_dump_json(by_alias=True).encode() for d in document) + b"]"
    else:
        body = document.model_dump_json(by_alias=True).encode()
    return Response(body, status_code=status_code, media_type="application/json")


def create_app(registry: Registry) -> FastAPI:
    app = FastAPI(
        title="connectome feature registry",
        version="1",
        description="A metadata catalog of feature tables and volumes in object storage, with validation, lineage, access control and temporary signed URLs.",
    )

    def principal(request: Request, credentials: HTTPAuthorizationCredentials | None = Security(_bearer)) -> Principal:
        header = f"{credentials.scheme} {credentials.credentials}" if credentials else request.headers.get("authorization")
        who = registry.authenticate(header, Audit(_action(request), client=_client(request)))
        request.state.user = who.name
        return who

    @app.exception_handler(RegistryError)
    def registry_error(_request: Request, error: RegistryError) -> JSONResponse:
        body = {"detail": error.message} | ({"error": jsonable_encoder(error.detail)} if error.detail is not None else {})
        return JSONResponse(body, status_code=error.status)

    @app.exception_handler(RequestValidationError)
    def malformed(request: Request, error: RequestValidationError) -> JSONResponse:
        refusal = Invalid(f"malformed request: {validation_problems(error.errors())}", detail=error.errors())
        # The body is parsed before the token is checked: attribute the refusal to the token's user, if any.
        user = getattr(request.state, "user", None) or registry.token_user(request.headers.get("authorization"))
        audit = Audit(_action(request), user, _client(request), request.path_params.get("name"))
        registry.record_refusal(audit, refusal)
        return JSONResponse({"detail": refusal.message, "error": jsonable_encoder(error.errors())}, status_code=422)

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict:
        with registry.store.engine.connect() as connection:
            connection.execute(sa.text("SELECT 1"))
        return {"status": "ok"}

    @app.post("/v1/tables", status_code=201, response_model=TableVersion, name="register")
    def register(body: Registration, request: Request, who: Principal = Depends(principal)) -> Response:
        """Register a new version of a table: the location is checked and its schema detected from the data."""
        return _json(registry.register(who, body, client=_client(request)), status_code=201)

    @app.get("/v1/tables", response_model=list[TableVersion], name="search")
    def search(
        request: Request,
        datastack: str | None = None,
        tag: str | None = None,
        status: Literal["draft", "published", "deprecated"] | None = None,
        materialization_version: str | None = None,
        q: str | None = Query(default=None, description="Text in the name or description."),
        limit: int = Query(default=100, ge=1, le=1000),
        offset: int = Query(default=0, ge=0),
        who: Principal = Depends(principal),
    ) -> Response:
        """Table versions matching every filter, on the datastacks the caller may read."""
        found = registry.search(
            who,
            datastack=datastack,
            tag=tag,
            status=status,
            materialization_version=materialization_version,
            text=q,
            limit=limit,
            offset=offset,
            client=_client(request),
        )
        return _json(found)

    @app.get("/v1/tables/{name}", response_model=TableInfo, name="show")
    def show(name: str, request: Request, who: Principal = Depends(principal)) -> Response:
        """A table and all its versions, newest first, with the current published version."""
        return _json(registry.show(who, name, client=_client(request)))

    @app.get("/v1/tables/{name}/lineage", response_model=Lineage, name="lineage")
    def lineage(
        name: str,
        request: Request,
        version: int | None = Query(default=None, ge=1),
        direction: Literal["up", "down", "both"] = "both",
        depth: int = Query(default=8, ge=1, le=64),
        who: Principal = Depends(principal),
    ) -> Response:
        """What the version was derived from (up) and what was derived from it (down)."""
        return _json(registry.lineage(who, name, version, direction, depth, client=_client(request)))

    @app.post("/v1/tables/{name}/status", response_model=TableVersion, name="status")
    def status(name: str, body: StatusChange, request: Request, who: Principal = Depends(principal)) -> Response:
        """Publish a version (the previous current one is deprecated, superseded by it) or deprecate one."""
        return _json(registry.set_status(who, name, body, client=_client(request)))

    @app.post("/v1/tables/{name}/access", response_model=AccessGrant, name="access")
    def access(name: str, request: Request, body: AccessRequest | None = None, who: Principal = Depends(principal)) -> Response:
        """Temporary URLs, one per data file, charged to the caller's daily byte quota (429 once exceeded)."""
        base_url = registry.config.public_url or str(request.base_url)
        return _json(registry.issue_access(who, name, body or AccessRequest(), base_url=base_url, client=_client(request)))

    @app.get("/v1/audit", response_model=list[AuditEntry], name="audit")
    def audit(
        user: str | None = None, action: str | None = None, limit: int = Query(default=100, ge=1, le=1000), who: Principal = Depends(principal)
    ) -> Response:
        """The audit log, newest first: everything for admins of every datastack, else own entries and administered datastacks."""
        return _json(registry.audit_log(who, user=user, action=action, limit=limit))

    @app.api_route(ROUTE + "/{path:path}", methods=["GET", "HEAD"], name="download", include_in_schema=False)
    def download(request: Request, user: str = "", expires: str = "", sig: str = "") -> FileResponse:
        # The raw (still percent-encoded) path: an encoded slash must be seen as such, not decoded away.
        raw = request.scope["raw_path"].decode("latin-1")
        raw = raw[raw.index(ROUTE) + len(ROUTE) :]
        path = registry.download_path(raw, user, expires, sig, client=_client(request))
        return FileResponse(path, media_type="application/octet-stream")

    return app


def app_from_environment() -> FastAPI:
    """The app of one server worker process (`uvicorn --factory`): its registry from the environment.

    The schema is migrated once by the process that starts the workers, never by each worker.
    """
    from connectome_assets.metadata.store import MetadataStore
    from connectome_assets.registry.config import registry_config
    from connectome_assets.settings import load_settings

    settings = load_settings()
    return create_app(Registry(MetadataStore(settings.metadata_url), registry_config(settings)))


def serve(host: str, port: int, workers: int = 1) -> None:
    """Serve the API with `workers` processes (each request runs on one core: more processes, more cores)."""
    import uvicorn

    uvicorn.run(
        f"{__name__}:app_from_environment", factory=True, host=host, port=port, workers=workers, log_level="info", access_log=False
    )
