"""From settings to a running registry: its configuration, the in-process service, or an HTTP client."""

from __future__ import annotations

import datetime as dt
import os
import secrets
from collections.abc import Sequence
from pathlib import Path

from connectome_assets.metadata.store import MetadataStore
from connectome_assets.registry.client import LocalRegistryClient, RegistryClient
from connectome_assets.registry.locations import canonical_location
from connectome_assets.registry.service import ALL_DATASTACKS, Registry, RegistryConfig
from connectome_assets.settings import Settings


def resolve_secret(secret: str, home: Path) -> bytes:
    """The configured HMAC key, else one generated once and kept (mode 0600) under the home."""
    if secret:
        return secret.encode()
    path = home / "registry.secret"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass  # another process created it first: use theirs
        else:
            with os.fdopen(fd, "w") as handle:
                handle.write(secrets.token_hex(32))
    return path.read_text().strip().encode()


def allowed_roots(object_store: str, extra: Sequence[str]) -> tuple[str, ...]:
    """The platform's object store, then the configured extra roots, canonical and without repeats."""
    return tuple(dict.fromkeys(canonical_location(r) for r in (object_store, *extra)))


def registry_config(settings: Settings) -> RegistryConfig:
    reg = settings.registry
    return RegistryConfig(
        roots=allowed_roots(settings.object_store, reg.roots),
        secret=resolve_secret(reg.secret, settings.home),
        public_url=reg.public_url or None,
        url_ttl=dt.timedelta(seconds=reg.url_ttl_seconds),
        daily_quota_bytes=reg.daily_quota_bytes,
        gcs_key_file=reg.gcs_key_file or None,
        gcs_endpoint=reg.gcs_endpoint,
    )


def local_registry(metadata_url: str, config: RegistryConfig) -> Registry:
    """The registry service on the metadata database (migrated), in this process."""
    store = MetadataStore(metadata_url)
    store.migrate()
    return Registry(store, config)


def in_process_client(metadata_url: str, config: RegistryConfig, user: str) -> LocalRegistryClient:
    """The registry in this process acting as `user`, who is given admin on every datastack:
    whoever can open the metadata database already controls the registry.
    """
    registry = local_registry(metadata_url, config)
    registry.grant(user, ALL_DATASTACKS, "admin")
    return LocalRegistryClient(registry, user)


def registry_client(settings: Settings) -> RegistryClient | LocalRegistryClient:
    """The HTTP client when a registry URL is configured, else the registry in-process."""
    if settings.registry.url:
        return RegistryClient(settings.registry.url, settings.registry.token)
    return in_process_client(settings.metadata_url, registry_config(settings), settings.registry.user)
