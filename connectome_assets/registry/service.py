"""The registry's behaviour, independent of HTTP: the API, the in-process client and the CLI call this.

Every method that changes something writes its audit row in the same transaction as the change;
every refusal (4xx) is written to the audit log by `refusals_audited` and nothing else is written.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from typing import get_args

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from connectome_assets.metadata.models import (
    RegistryAudit,
    RegistryGrant,
    RegistryGroup,
    RegistryGroupMember,
    RegistryLineage,
    RegistryTableVersion,
    RegistryTag,
    RegistryToken,
    RegistryUsage,
    RegistryUser,
)
from connectome_assets.metadata.store import MetadataStore
from connectome_assets.registry.detect import Column, Detected, detect, schema_diff
from connectome_assets.registry.errors import Conflict, Forbidden, Invalid, NotFound, QuotaExceeded, RegistryError, Unauthorized, Unavailable
from connectome_assets.registry.file_urls import LOCAL_SERVE_URL, sign_download, verified_download_path
from connectome_assets.registry.locations import canonical_location, local_path, require_within_roots
from connectome_assets.registry.schemas import (
    Level,
    AccessGrant,
    AccessRequest,
    AuditEntry,
    ColumnSpec,
    Lineage,
    LineageEdge,
    LineageNode,
    Registration,
    SignedFile,
    StatusChange,
    TableInfo,
    TableVersion,
)

LEVELS = {level: rank for rank, level in enumerate(get_args(Level), start=1)}  # read < write < admin
ALL_DATASTACKS = "*"
TOKEN_PREFIX = "cr_"
MAX_SEARCH_RESULTS = 1000
# Registration fields stored as given and shown as stored (times are shown in UTC).
TIMES = ("snapshot_at", "valid_from", "valid_to")
AS_GIVEN = (
    "description", "format", "datastack", "aligned_volume", "materialization_version", "owner_team", "owner_person",
    "invalidation_radius_nm", "license", "usage_constraints", "retention_days", "citation", "produced_by", "hash_function", *TIMES,
)  # fmt: skip


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _utc(value: dt.datetime | None) -> dt.datetime | None:
    # SQLite returns naive datetimes; everything stored is UTC.
    return value if value is None or value.tzinfo else value.replace(tzinfo=dt.timezone.utc)


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, or None when there is none."""
    scheme, _, token = (authorization or "").partition(" ")
    return (token.strip() or None) if scheme.lower() == "bearer" else None


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class RegistryConfig:
    roots: tuple[str, ...]  # canonical allowed location roots
    secret: bytes  # HMAC key of file:// download URLs
    public_url: str | None = None  # base URL of the download route; None: the request's own (in-process: LOCAL_SERVE_URL)
    url_ttl: dt.timedelta = dt.timedelta(hours=1)
    daily_quota_bytes: int = 1 << 40
    gcs_key_file: str | None = None
    gcs_endpoint: str = "https://storage.googleapis.com"


@dataclass(frozen=True)
class Principal:
    """An authenticated user and their effective level per datastack (own grants and their groups')."""

    user_id: int
    name: str
    levels: dict[str, int] = field(default_factory=dict)

    def level(self, datastack: str) -> int:
        return max(self.levels.get(datastack, 0), self.levels.get(ALL_DATASTACKS, 0))

    def require(self, datastack: str, level: str, doing: str) -> None:
        if self.level(datastack) < LEVELS[level]:
            raise Forbidden(f"user {self.name} needs {level} on datastack {datastack} to {doing}")

    def readable(self) -> list[str] | None:
        """The datastacks this user may read, or None for all of them."""
        if self.levels.get(ALL_DATASTACKS, 0) >= LEVELS["read"]:
            return None
        return sorted(d for d, rank in self.levels.items() if rank >= LEVELS["read"])


@dataclass
class Audit:
    """What a refusal is written to the audit log with; filled in as a request is understood."""

    action: str
    user: str | None = None
    client: str | None = None
    table_name: str | None = None
    table_version: int | None = None
    datastack: str | None = None


class Registry:
    def __init__(self, store: MetadataStore, config: RegistryConfig) -> None:
        self.store = store
        self.config = config

    @cached_property
    def gcs_signer(self):
        # Imported on first use: google-cloud-storage is needed only to sign gs:// URLs.
        from connectome_assets.registry.gcs_signing import GcsSigner

        return GcsSigner(self.config.gcs_key_file, endpoint=self.config.gcs_endpoint)

    def _session(self) -> Session:
        return self.store._session()

    # auditing ---------------------------------------------------------------------------
    def _audit(self, session: Session, audit: Audit, outcome: str, status: int, detail: str = "", bytes_: int | None = None) -> None:
        session.add(
            RegistryAudit(
                at=_now(),
                user_name=audit.user,
                action=audit.action,
                outcome=outcome,
                status_code=status,
                table_name=audit.table_name,
                table_version=audit.table_version,
                datastack=audit.datastack,
                bytes=bytes_,
                detail=detail[:4000],
                client=audit.client,
            )
        )

    def record_refusal(self, audit: Audit, error: RegistryError) -> None:
        with self._session() as session, session.begin():
            self._audit(session, audit, "refused", error.status, error.message)

    @contextmanager
    def refusals_audited(self, audit: Audit) -> Iterator[Audit]:
        try:
            yield audit
        except RegistryError as error:
            self.record_refusal(audit, error)
            raise

    # users, groups, grants, tokens ------------------------------------------------------
    def ensure_user(self, name: str, daily_byte_quota: int | None = None) -> int:
        with self._session() as session, session.begin():
            return self._ensure_user(session, name, daily_byte_quota)

    def _ensure_user(self, session: Session, name: str, daily_byte_quota: int | None = None) -> int:
        user = session.scalar(sa.select(RegistryUser).where(RegistryUser.name == name))
        if user is None:
            user = RegistryUser(name=name, disabled=False, created_at=_now())
            session.add(user)
        if daily_byte_quota is not None:
            user.daily_byte_quota = daily_byte_quota
        session.flush()
        return user.id

    def grant(self, user: str, datastack: str, level: str) -> None:
        """Give a user `level` on a datastack (`*` for all); a lower existing grant is raised, never lowered."""
        with self._session() as session, session.begin():
            self._grant(session, RegistryGrant.user_id, self._ensure_user(session, user), datastack, level)

    def grant_group(self, group: str, datastack: str, level: str) -> None:
        with self._session() as session, session.begin():
            self._grant(session, RegistryGrant.group_id, self._ensure_group(session, group), datastack, level)

    def add_to_group(self, user: str, group: str) -> None:
        with self._session() as session, session.begin():
            user_id, group_id = self._ensure_user(session, user), self._ensure_group(session, group)
            if session.get(RegistryGroupMember, (group_id, user_id)) is None:
                session.add(RegistryGroupMember(group_id=group_id, user_id=user_id))

    def _ensure_group(self, session: Session, name: str) -> int:
        group = session.scalar(sa.select(RegistryGroup).where(RegistryGroup.name == name))
        if group is None:
            group = RegistryGroup(name=name)
            session.add(group)
            session.flush()
        return group.id

    @staticmethod
    def _grant(session: Session, column, principal_id: int, datastack: str, level: str) -> None:
        if level not in LEVELS:
            raise Invalid(f"unknown access level {level!r} (one of {', '.join(LEVELS)})")
        existing = session.scalar(sa.select(RegistryGrant).where(column == principal_id, RegistryGrant.datastack == datastack))
        if existing is None:
            grant = RegistryGrant(datastack=datastack, level=level)
            setattr(grant, column.key, principal_id)
            session.add(grant)
        elif LEVELS[level] > LEVELS[existing.level]:
            existing.level = level

    def create_token(self, user: str, grants: list[tuple[str, str]] = (), expires_in: dt.timedelta | None = None) -> str:
        """A new bearer token for `user` (created if new), after adding `grants` ((datastack, level) pairs).

        Only the token's SHA-256 is stored: the returned token cannot be shown again.
        """
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        now = _now()
        with self._session() as session, session.begin():
            user_id = self._ensure_user(session, user)
            for datastack, level in grants:
                self._grant(session, RegistryGrant.user_id, user_id, datastack, level)
            session.add(RegistryToken(user_id=user_id, token_hash=hash_token(token), created_at=now, expires_at=now + expires_in if expires_in else None))
            granted = ", ".join(f"{d}:{lv}" for d, lv in grants)
            self._audit(session, Audit("token_create", user=user), "ok", 201, f"grants: {granted or 'none added'}")
        return token

    def revoke_token(self, token: str) -> None:
        with self._session() as session, session.begin():
            row = session.scalar(sa.select(RegistryToken).where(RegistryToken.token_hash == hash_token(token)))
            if row is None:
                raise NotFound("no such token")
            row.revoked_at = _now()

    def disable_user(self, user: str) -> None:
        with self._session() as session, session.begin():
            row = session.scalar(sa.select(RegistryUser).where(RegistryUser.name == user))
            if row is None:
                raise NotFound(f"no user {user}")
            row.disabled = True

    def authenticate(self, authorization: str | None, audit: Audit) -> Principal:
        """The principal behind an `Authorization: Bearer …` header; refusals are audited."""
        with self.refusals_audited(audit):
            token = bearer_token(authorization)
            if token is None:
                raise Unauthorized("missing bearer token (send `Authorization: Bearer <token>`)")
            with self._session() as session:
                found = session.execute(
                    sa.select(RegistryToken, RegistryUser)
                    .join(RegistryUser, RegistryUser.id == RegistryToken.user_id)
                    .where(RegistryToken.token_hash == hash_token(token))
                ).first()
                if found is None:
                    raise Unauthorized("unknown token")
                row, user = found
                audit.user = user.name
                if row.revoked_at is not None:
                    raise Unauthorized("token was revoked")
                if row.expires_at is not None and _utc(row.expires_at) <= _now():
                    raise Unauthorized(f"token expired at {_utc(row.expires_at).isoformat()}")
                if user.disabled:
                    raise Unauthorized(f"user {user.name} is disabled")
                return self._principal(session, user)

    def token_user(self, authorization: str | None) -> str | None:
        """The user a bearer header names, without judging it (to attribute a refusal made before authentication)."""
        token = bearer_token(authorization)
        if token is None:
            return None
        with self._session() as session:
            return session.scalar(
                sa.select(RegistryUser.name)
                .join(RegistryToken, RegistryToken.user_id == RegistryUser.id)
                .where(RegistryToken.token_hash == hash_token(token))
            )

    def principal(self, user: str) -> Principal:
        """The principal of a named user, for in-process callers that already are trusted (CLI, Dagster)."""
        with self._session() as session:
            row = session.scalar(sa.select(RegistryUser).where(RegistryUser.name == user))
            if row is None:
                raise NotFound(f"no user {user}")
            return self._principal(session, row)

    @staticmethod
    def _principal(session: Session, user: RegistryUser) -> Principal:
        groups = sa.select(RegistryGroupMember.group_id).where(RegistryGroupMember.user_id == user.id)
        grants = session.execute(
            sa.select(RegistryGrant.datastack, RegistryGrant.level).where(sa.or_(RegistryGrant.user_id == user.id, RegistryGrant.group_id.in_(groups)))
        ).all()
        levels: dict[str, int] = {}
        for datastack, level in grants:
            levels[datastack] = max(levels.get(datastack, 0), LEVELS[level])
        return Principal(user.id, user.name, levels)

    # registration -------------------------------------------------------------------------
    def register(self, who: Principal, request: Registration, client: str | None = None) -> TableVersion:
        """Validate the data at the location and record a new version of the table name."""
        audit = Audit("register", who.name, client, request.name, datastack=request.datastack)
        with self.refusals_audited(audit):
            who.require(request.datastack, "write", f"register {request.name}")
            location = canonical_location(request.location)
            require_within_roots(location, list(self.config.roots))
            found = detect(location, request.format)
            for data_file in found.files:
                require_within_roots(canonical_location(data_file.uri), list(self.config.roots), what="data file")
            columns, schema_source, note = _recorded_schema(request, found, location)
            partition_columns = _partition_columns(request, found, location)
            now = _now()
            with self._session() as session, session.begin():
                latest, datastack = session.execute(
                    sa.select(sa.func.max(RegistryTableVersion.version), sa.func.min(RegistryTableVersion.datastack)).where(
                        RegistryTableVersion.name == request.name
                    )
                ).one()
                if datastack is not None and datastack != request.datastack:
                    raise Conflict(f"table {request.name} belongs to datastack {datastack}, not {request.datastack}")
                parents = [self._resolve_parent(session, who, ref) for ref in dict.fromkeys(request.derived_from)]
                row = RegistryTableVersion(
                    **{field: getattr(request, field) for field in AS_GIVEN},
                    name=request.name,
                    version=(latest or 0) + 1,
                    location=location,
                    columns=columns,
                    volume=found.volume,
                    schema_source=schema_source,
                    schema_note=note,
                    annotation_refs=[r.model_dump() for r in request.annotation_refs],
                    status="draft",
                    partition_columns=partition_columns,
                    bytes=found.bytes,
                    row_count=found.rows,
                    files=[{"uri": f.uri, "bytes": f.bytes, "rows": f.rows} for f in found.files],
                    file_count=len(found.files),
                    registered_by=who.name,
                    registered_at=now,
                    status_changed_at=now,
                )
                session.add(row)
                try:
                    session.flush()
                except IntegrityError:
                    raise Conflict(f"table {request.name} was registered concurrently; retry") from None
                audit.table_version = row.version
                session.add_all(RegistryTag(version_id=row.id, tag=tag) for tag in dict.fromkeys(request.tags))
                for parent in parents:
                    session.add(RegistryLineage(child_id=row.id, **parent))
                if request.status == "published":
                    self._publish(session, row, now)
                self._audit(session, audit, "ok", 201, f"{request.format} at {location}: {found.bytes} bytes, {len(found.files)} files")
                session.flush()
                return self._documents(session, [row])[0]

    def _resolve_parent(self, session: Session, who: Principal, ref: str) -> dict:
        if "://" in ref:
            return {"parent_uri": ref}
        row = self._find_version(session, *_parse_ref(ref))
        who.require(row.datastack, "read", f"derive from {ref}")
        return {"parent_id": row.id}

    def _find_version(self, session: Session, name: str, version: int | None) -> RegistryTableVersion:
        """`name@version`, or the current published version of `name` (else its newest version)."""
        query = sa.select(RegistryTableVersion).where(RegistryTableVersion.name == name)
        if version is not None:
            row = session.scalar(query.where(RegistryTableVersion.version == version))
        else:
            row = session.scalar(query.where(RegistryTableVersion.status == "published")) or session.scalar(
                query.order_by(RegistryTableVersion.version.desc()).limit(1)
            )
        if row is None:
            raise NotFound(f"no registered table {name}" + (f" version {version}" if version is not None else ""))
        return row

    @staticmethod
    def _publish(session: Session, row: RegistryTableVersion, now: dt.datetime) -> None:
        """Make `row` the current version: the previous current one is deprecated, superseded by it."""
        current = session.scalar(
            sa.select(RegistryTableVersion).where(
                RegistryTableVersion.name == row.name, RegistryTableVersion.status == "published", RegistryTableVersion.id != row.id
            )
        )
        if current is not None:
            current.status, current.superseded_by_id, current.status_changed_at = "deprecated", row.id, now
            session.flush()  # the partial unique index allows one published version at a time
        row.status, row.status_changed_at = "published", now
        session.flush()

    # status -------------------------------------------------------------------------------
    def set_status(self, who: Principal, name: str, change: StatusChange, client: str | None = None) -> TableVersion:
        """draft → published → deprecated (draft → deprecated abandons a draft); never backwards."""
        audit = Audit("status", who.name, client, name, change.version)
        with self.refusals_audited(audit):
            with self._session() as session, session.begin():
                row = self._find_version(session, name, change.version)
                audit.datastack = row.datastack
                who.require(row.datastack, "write", f"change the status of {name}")
                if (row.status, change.status) not in (("draft", "published"), ("draft", "deprecated"), ("published", "deprecated")):
                    raise Conflict(f"{name}@{row.version} is {row.status}; it cannot become {change.status}")
                if change.superseded_by and change.status != "deprecated":
                    raise Invalid("superseded_by is given only when deprecating")
                now = _now()
                if change.status == "published":
                    self._publish(session, row, now)
                else:
                    if change.superseded_by:
                        replacement = self._find_version(session, *_parse_ref(change.superseded_by))
                        if replacement.id == row.id:
                            raise Invalid(f"{name}@{row.version} cannot supersede itself")
                        who.require(replacement.datastack, "read", f"name {change.superseded_by} as the replacement")
                        row.superseded_by_id = replacement.id
                    row.status, row.status_changed_at = "deprecated", now
                self._audit(session, audit, "ok", 200, f"now {change.status}" + (f", superseded by {change.superseded_by}" if change.superseded_by else ""))
                session.flush()
                return self._documents(session, [row])[0]

    # reading ------------------------------------------------------------------------------
    def search(
        self,
        who: Principal,
        *,
        datastack: str | None = None,
        tag: str | None = None,
        status: str | None = None,
        materialization_version: str | None = None,
        text: str | None = None,
        limit: int = 100,
        offset: int = 0,
        client: str | None = None,
    ) -> list[TableVersion]:
        """Versions matching every given filter that the caller may read, by name then newest first."""
        with self.refusals_audited(Audit("search", who.name, client, datastack=datastack)):
            # Plain rows without the file lists: a listing needs neither ORM objects nor thousands of shard names.
            query = sa.select(*LISTED_COLUMNS)
            readable = who.readable()
            if datastack is not None:
                who.require(datastack, "read", "search it")
                query = query.where(RegistryTableVersion.datastack == datastack)
            elif readable is not None:
                query = query.where(RegistryTableVersion.datastack.in_(readable))
            if tag is not None:
                query = query.where(RegistryTableVersion.id.in_(sa.select(RegistryTag.version_id).where(RegistryTag.tag == tag)))
            if status is not None:
                query = query.where(RegistryTableVersion.status == status)
            if materialization_version is not None:
                query = query.where(RegistryTableVersion.materialization_version == materialization_version)
            if text:
                pattern = "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
                query = query.where(
                    sa.or_(RegistryTableVersion.name.ilike(pattern, escape="\\"), RegistryTableVersion.description.ilike(pattern, escape="\\"))
                )
            query = query.order_by(RegistryTableVersion.name, RegistryTableVersion.version.desc())
            with self._session() as session:
                rows = session.execute(query.limit(min(max(limit, 1), MAX_SEARCH_RESULTS)).offset(max(offset, 0))).all()
                return self._documents(session, rows, with_files=False)

    def show(self, who: Principal, name: str, client: str | None = None) -> TableInfo:
        with self.refusals_audited(Audit("show", who.name, client, name)) as audit:
            with self._session() as session:
                rows = session.scalars(
                    sa.select(RegistryTableVersion).where(RegistryTableVersion.name == name).order_by(RegistryTableVersion.version.desc())
                ).all()
                if not rows:
                    raise NotFound(f"no registered table {name}")
                audit.datastack = rows[0].datastack
                who.require(rows[0].datastack, "read", f"read {name}")
                current = next((r.version for r in rows if r.status == "published"), None)
                return TableInfo(name=name, datastack=rows[0].datastack, current=current, versions=self._documents(session, rows))

    def lineage(
        self, who: Principal, name: str, version: int | None = None, direction: str = "both", depth: int = 8, client: str | None = None
    ) -> Lineage:
        """What a version was derived from (`up`) and what was derived from it (`down`), `depth` steps each way."""
        with self.refusals_audited(Audit("lineage", who.name, client, name, version)) as audit:
            if direction not in ("up", "down", "both"):
                raise Invalid(f"direction must be up, down or both, not {direction!r}")
            with self._session() as session:
                root = self._find_version(session, name, version)
                audit.datastack = root.datastack
                who.require(root.datastack, "read", f"read {name}")
                versions = {root.id: root}
                edges: set[tuple[str, str]] = set()
                uris: set[str] = set()
                hidden: set[int] = set()
                for step_up in (True, False):
                    if direction == ("down" if step_up else "up"):
                        continue
                    frontier = {root.id}
                    for _ in range(max(depth, 0)):
                        if not frontier:
                            break
                        where = RegistryLineage.child_id.in_(frontier) if step_up else RegistryLineage.parent_id.in_(frontier)
                        links = session.scalars(sa.select(RegistryLineage).where(where)).all()
                        reached = {link.parent_id if step_up else link.child_id for link in links} - {None}
                        for row in session.scalars(sa.select(RegistryTableVersion).where(RegistryTableVersion.id.in_(reached - set(versions)))):
                            versions[row.id] = row
                        next_frontier = set()
                        for link in links:
                            other = link.parent_id if step_up else link.child_id
                            if other is None:
                                uris.add(link.parent_uri)
                                edges.add((_ref(versions[link.child_id]), link.parent_uri))
                                continue
                            if who.level(versions[other].datastack) < LEVELS["read"]:
                                hidden.add(other)
                                continue
                            edges.add((_ref(versions[link.child_id]), _ref(versions[link.parent_id])))
                            next_frontier.add(other)
                        frontier = next_frontier
                nodes = [
                    LineageNode(ref=_ref(r), name=r.name, version=r.version, status=r.status, location=r.location)
                    for r in versions.values()
                    if r.id not in hidden
                ]
                nodes += [LineageNode(ref=u, name=None, version=None, status=None, location=u) for u in sorted(uris)]
                return Lineage(
                    root=_ref(root),
                    nodes=sorted(nodes, key=lambda n: n.ref),
                    edges=[LineageEdge(child=c, parent=p) for c, p in sorted(edges)],
                    hidden=len(hidden),
                )

    def audit_log(self, who: Principal, user: str | None = None, action: str | None = None, limit: int = 100) -> list[AuditEntry]:
        """Newest first. Admins of every datastack see everything; others their own entries and those of datastacks they administer."""
        query = sa.select(RegistryAudit)
        if who.levels.get(ALL_DATASTACKS, 0) < LEVELS["admin"]:
            administered = [d for d, rank in who.levels.items() if rank >= LEVELS["admin"]]
            query = query.where(sa.or_(RegistryAudit.user_name == who.name, RegistryAudit.datastack.in_(administered)))
        if user is not None:
            query = query.where(RegistryAudit.user_name == user)
        if action is not None:
            query = query.where(RegistryAudit.action == action)
        with self._session() as session:
            rows = session.scalars(query.order_by(RegistryAudit.id.desc()).limit(min(max(limit, 1), MAX_SEARCH_RESULTS))).all()
            return [
                AuditEntry(
                    at=_utc(r.at),
                    user=r.user_name,
                    action=r.action,
                    outcome=r.outcome,
                    status_code=r.status_code,
                    table_name=r.table_name,
                    table_version=r.table_version,
                    datastack=r.datastack,
                    bytes=r.bytes,
                    detail=r.detail,
                    client=r.client,
                )
                for r in rows
            ]

    # access -------------------------------------------------------------------------------
    def issue_access(
        self, who: Principal, name: str, request: AccessRequest, base_url: str | None = None, client: str | None = None
    ) -> AccessGrant:
        """Temporary URLs for every data file of a version, charged to the caller's daily byte quota."""
        audit = Audit("access", who.name, client, name, request.version)
        with self.refusals_audited(audit):
            with self._session() as session:
                if request.version is None:
                    row = session.scalar(
                        sa.select(RegistryTableVersion).where(RegistryTableVersion.name == name, RegistryTableVersion.status == "published")
                    )
                    if row is None:
                        self._find_version(session, name, None)  # NotFound when the name is unknown
                        raise Conflict(f"table {name} has no published version; ask for a version explicitly")
                else:
                    row = self._find_version(session, name, request.version)
                audit.datastack, audit.table_version = row.datastack, row.version
                who.require(row.datastack, "read", f"read {name}")
                files, total, fmt, version = row.files, row.bytes, row.format, row.version
            expires_at = _now().replace(microsecond=0) + self.config.url_ttl
            urls = [self._signed(f["uri"], f["bytes"], who.name, expires_at, base_url) for f in files]
            with self._session() as session, session.begin():
                self._charge(session, who, total)
                self._audit(session, audit, "ok", 200, f"{len(urls)} URLs until {expires_at.isoformat()}", bytes_=total)
            return AccessGrant(name=name, version=version, format=fmt, bytes=total, expires_at=expires_at, urls=urls)

    def _signed(self, uri: str, size: int, user: str, expires_at: dt.datetime, base_url: str | None) -> SignedFile:
        if uri.startswith("gs://"):
            try:
                url = self.gcs_signer.sign(uri, self.config.url_ttl, now=expires_at - self.config.url_ttl).url
            except (OSError, RuntimeError, ValueError) as exc:  # no key or credentials: the operator's to fix
                raise Unavailable(f"the registry cannot sign gs:// URLs: {exc}") from None
        else:
            url = sign_download(base_url or self.config.public_url or LOCAL_SERVE_URL, local_path(canonical_location(uri)), user, expires_at, self.config.secret)
        return SignedFile(url=url, expires_at=expires_at, uri=uri, bytes=size)

    def _charge(self, session: Session, who: Principal, size: int) -> None:
        """Add `size` to today's usage in one atomic upsert, unless that would pass the user's daily quota."""
        quota = session.scalar(sa.select(RegistryUser.daily_byte_quota).where(RegistryUser.id == who.user_id))
        quota = self.config.daily_quota_bytes if quota is None else quota
        day = _now().date()
        insert = sqlite_insert if session.get_bind().dialect.name == "sqlite" else postgresql_insert
        upsert = (
            insert(RegistryUsage)
            .values(user_id=who.user_id, day=day, bytes=size)
            .on_conflict_do_update(
                index_elements=[RegistryUsage.user_id, RegistryUsage.day],
                set_={"bytes": RegistryUsage.bytes + size},
                where=RegistryUsage.bytes + size <= quota,
            )
            .returning(RegistryUsage.bytes)
        )
        # No row comes back when the WHERE held the update back (rowcount is not reliable across drivers here).
        if size <= quota and session.execute(upsert).first() is not None:
            return
        used = session.scalar(sa.select(RegistryUsage.bytes).where(RegistryUsage.user_id == who.user_id, RegistryUsage.day == day)) or 0
        raise QuotaExceeded(
            f"daily access quota of {quota} bytes for user {who.name} would be exceeded: {used} bytes granted today, this access needs {size}",
            detail={"quota": quota, "used": used, "requested": size},
        )

    def download_path(self, raw_path: str, user: str, expires: str, sig: str, client: str | None = None) -> str:
        """The local file a signed download URL may read (refusals audited; successful reads are not: the grant was)."""
        with self.refusals_audited(Audit("download", user or None, client)):
            path = verified_download_path(raw_path, user, expires, sig, self.config.secret, list(self.config.roots))
            with self._session() as session:
                disabled = session.scalar(sa.select(RegistryUser.disabled).where(RegistryUser.name == user))
            if disabled is not False:
                raise Forbidden(f"user {user} is disabled or unknown")
            return path

    # documents ----------------------------------------------------------------------------
    def _documents(self, session: Session, rows: list[RegistryTableVersion], with_files: bool = True) -> list[TableVersion]:
        ids = [r.id for r in rows]
        tags: dict[int, list[str]] = {}
        for version_id, tag in session.execute(sa.select(RegistryTag.version_id, RegistryTag.tag).where(RegistryTag.version_id.in_(ids))):
            tags.setdefault(version_id, []).append(tag)
        parents: dict[int, list[str]] = {}
        parent_rows = _PARENT_VERSION
        links = session.execute(
            sa.select(RegistryLineage.child_id, RegistryLineage.parent_uri, parent_rows.name, parent_rows.version)
            .outerjoin(parent_rows, parent_rows.id == RegistryLineage.parent_id)
            .where(RegistryLineage.child_id.in_(ids))
            .order_by(RegistryLineage.id)
        )
        for child_id, uri, parent_name, parent_version in links:
            parents.setdefault(child_id, []).append(uri or f"{parent_name}@{parent_version}")
        successor_ids = {r.superseded_by_id for r in rows} - {None}
        successors = {
            i: f"{n}@{v}"
            for i, n, v in session.execute(
                sa.select(RegistryTableVersion.id, RegistryTableVersion.name, RegistryTableVersion.version).where(RegistryTableVersion.id.in_(successor_ids))
            )
        }
        return [
            TableVersion(
                **{field: getattr(r, field) for field in AS_GIVEN if field not in TIMES},
                **{field: _utc(getattr(r, field)) for field in TIMES},
                name=r.name,
                version=r.version,
                status=r.status,
                location=r.location,
                columns=r.columns,
                schema_source=r.schema_source,
                schema_note=r.schema_note,
                volume=r.volume,
                annotation_refs=r.annotation_refs,
                tags=sorted(tags.get(r.id, [])),
                derived_from=parents.get(r.id, []),
                superseded_by=successors.get(r.superseded_by_id),
                partition_columns=r.partition_columns,
                bytes=r.bytes,
                row_count=r.row_count,
                file_count=r.file_count,
                files=r.files if with_files else None,
                registered_by=r.registered_by,
                registered_at=_utc(r.registered_at),
                status_changed_at=_utc(r.status_changed_at),
            )
            for r in rows
        ]


LISTED_COLUMNS = [c for c in RegistryTableVersion.__table__.c if c.name != "files"]
# Built once: an alias builds its column proxies, which costs more than the query that uses it.
_PARENT_VERSION = sa.orm.aliased(RegistryTableVersion)


def _ref(row: RegistryTableVersion) -> str:
    return f"{row.name}@{row.version}"


def _parse_ref(ref: str) -> tuple[str, int | None]:
    name, _, version = ref.partition("@")
    if version and not version.isdigit():
        raise Invalid(f"table reference {ref!r} must be `name` or `name@version`")
    return name, int(version) if version else None


def _recorded_schema(request: Registration, found: Detected, location: str) -> tuple[list[dict] | None, str, str]:
    """The columns to record, where they came from, and a note; a declared schema must agree with the data."""
    declared = [Column(c.name, c.type, c.description) for c in request.declared_schema] if request.declared_schema else None
    if found.volume is not None:
        if declared:
            raise Invalid(f"{location} is a neuroglancer volume: its schema comes from its info file; do not declare columns")
        return None, "detected", found.note
    if found.columns is None:
        if not declared:
            raise Invalid(f"{found.note or f'format {request.format} is not supported for detection here'}; declare the table's `schema` to register it")
        return [ColumnSpec(name=c.name, type=c.type, description=c.description).model_dump() for c in declared], "declared", found.note
    if declared is not None:
        diff = schema_diff(declared, found.columns)
        if diff:
            summary = "; ".join(f"{d['column']}: {d['problem']}" for d in diff[:10])
            raise Invalid(f"the declared schema disagrees with the data at {location} ({summary})", detail={"column_diff": diff})
    described = {c.name: c.description for c in declared or []}
    return [{"name": c.name, "type": c.type, "description": described.get(c.name, "")} for c in found.columns], "detected", found.note


def _partition_columns(request: Registration, found: Detected, location: str) -> list[str]:
    if request.partition_columns and found.partition_columns and list(request.partition_columns) != list(found.partition_columns):
        raise Invalid(f"declared partition columns {request.partition_columns} disagree with {found.partition_columns} found at {location}")
    return list(request.partition_columns or found.partition_columns)
