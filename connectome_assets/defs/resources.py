"""Resources shared by every stage, built from `settings.py` (the one reader of CONNECTOME_*)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import dagster as dg
from clickhouse_connect.driver.client import Client
from pydantic import Field

from connectome_assets.connectome.catalog import DatasetEntry, entry_digest, list_dataset_names, load_entry, sources_version
from connectome_assets.defs.volumes.tasks import VolumeTasksResource
from connectome_assets.metadata.store import MetadataStore
from connectome_assets.registry.client import LocalRegistryClient, RegistryClient
from connectome_assets.registry.config import allowed_roots, in_process_client
from connectome_assets.registry.service import RegistryConfig
from connectome_assets.settings import Settings
from connectome_assets.warehouse.client import connect


class ClickHouseResource(dg.ConfigurableResource):
    """ClickHouse: `chdb:///path` embedded (laptop, tests) or `https://…` (production)."""

    url: str = Field(description="chdb:///abs/path or https://user:password@host:port")
    database: str = Field(default="connectome", description="Database holding the canonical tables.")

    def get_client(self) -> Client:
        return connect(self.url)


@lru_cache(maxsize=8)
def _migrated_store(url: str) -> MetadataStore:
    store = MetadataStore(url)
    store.migrate()
    return store


class MetadataResource(dg.ConfigurableResource):
    """The metadata database (SQLite locally, PostgreSQL in production), migrated on first use."""

    url: str = Field(description="SQLAlchemy URL: sqlite:///… or postgresql://…")

    def get_store(self) -> MetadataStore:
        return _migrated_store(self.url)


class CatalogResource(dg.ConfigurableResource):
    """The folder of dataset catalog entries (`<name>.yaml`)."""

    path: str = Field(description="Folder of the dataset catalog.")

    def entry(self, name: str) -> DatasetEntry:
        return load_entry(Path(self.path), name)

    def names(self) -> list[str]:
        return list_dataset_names(Path(self.path))

    def digest(self, name: str) -> str:
        return entry_digest(Path(self.path), name)

    def sources_version(self, name: str, state: MetadataStore) -> str:
        return sources_version(Path(self.path), name, state)


class StorageResource(dg.ConfigurableResource):
    """Where exports go (the object store) and where the local article cache lives."""

    object_store: str = Field(description="file:///abs/path or gs://bucket/prefix")
    article_cache: str = Field(description="Local folder of the article cache (one sub-folder per dataset).")


class VolumesResource(dg.ConfigurableResource):
    """Where DVID exports arrive, where their neuroglancer volumes go, and where manifests are kept."""

    exports: str = Field(description="Folder watched for DVID export-shards output (one sub-folder per export).")
    destination_root: str = Field(description="file:///abs/path or gs://bucket/prefix; each export's volume goes under it by name.")
    manifests: str = Field(description="file:///abs/path or gs://bucket/prefix of the scale manifests (where worker pods read them).")

    def export_dir(self, name: str) -> Path:
        return Path(self.exports) / name

    def manifest_url(self, name: str, scale: int) -> str:
        return f"{self.manifests.rstrip('/')}/{name}/manifest-s{scale}.json"

    def destination(self, name: str) -> str:
        return f"{self.destination_root.rstrip('/')}/{name}"


class RegistryResource(dg.ConfigurableResource):
    """The feature registry, for registering: an HTTP registry (`url` + `token`), or, when `url` is empty,
    the registry code in-process on the metadata database acting as `user`. The in-process registry
    gets no download key: Dagster registers, it never hands out access.
    """

    url: str = Field(default="", description="Registry base URL; empty: in-process on the metadata database.")
    token: str = Field(default="", description="Bearer token with write on the datastacks registered into (from CONNECTOME_REGISTRY_TOKEN).")
    user: str = Field(default="platform", description="The acting user of the in-process registry.")
    metadata_url: str = Field(description="Metadata database of the in-process registry.")
    roots: list[str] = Field(description="Allowed location roots of the in-process registry.")

    def get_client(self) -> RegistryClient | LocalRegistryClient:
        if self.url:
            return RegistryClient(self.url, self.token)
        return in_process_client(self.metadata_url, RegistryConfig(roots=tuple(self.roots), secret=b""), self.user)


def build_resources(settings: Settings) -> dict[str, dg.ConfigurableResource]:
    return {
        "clickhouse": ClickHouseResource(url=settings.clickhouse_url, database=settings.clickhouse_database),
        "metadata": MetadataResource(url=settings.metadata_url),
        "catalog": CatalogResource(path=str(settings.catalog)),
        "storage": StorageResource(object_store=settings.object_store, article_cache=str(settings.article_cache)),
        "registry": RegistryResource(
            url=settings.registry.url,
            # A secret: read from the environment at run time, never shown as resource config in the UI.
            token=dg.EnvVar("CONNECTOME_REGISTRY_TOKEN") if settings.registry.token else "",
            user=settings.registry.user,
            metadata_url=settings.metadata_url,
            roots=list(allowed_roots(settings.object_store, settings.registry.roots)),
        ),
        "volumes": VolumesResource(
            exports=str(settings.exports),
            destination_root=f"{settings.object_store.rstrip('/')}/volumes",
            manifests=f"{settings.object_store.rstrip('/')}/volume-manifests",
        ),
        "volume_tasks": VolumeTasksResource.from_settings(settings.volume_tasks),
    }
