"""The one place that reads the environment.

Every other module receives a `Settings` (or the values in it); nothing else looks at
`os.environ` for `CONNECTOME_*` variables. Defaults are the embedded ones (chDB, SQLite,
local files) so a laptop runs the same code as production with no servers installed.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class RegistrySettings:
    """The feature registry: where it runs, how it signs, what it allows."""

    url: str  # HTTP registry to talk to; empty: run the registry in-process on the metadata database
    token: str  # bearer token used with `url`
    user: str  # the in-process registry's acting user (embedded mode), created with admin on every datastack
    secret: str  # HMAC key of file:// download URLs; empty: a key kept in `<home>/registry.secret`
    roots: tuple[str, ...]  # allowed location roots besides the object store
    public_url: str  # base URL put into file:// download URLs; empty: the request's own base URL
    url_ttl_seconds: int
    daily_quota_bytes: int  # default per-user daily byte quota of issued access
    gcs_key_file: str  # service-account key for GCS V4 signing; empty: IAM signBlob with the default credentials
    gcs_endpoint: str


@dataclass(frozen=True)
class VolumeTaskSettings:
    """How the volume worker's tasks run: local processes, or Kubernetes Indexed Jobs."""

    runner: str  # "local" (subprocesses of the worker entry point) or "kubernetes" (Indexed Jobs)
    local_workers: int  # processes at once locally; 0: sized by the cores and the tasks' memory
    image: str  # the worker pods' image (the user-code image)
    namespace: str  # where the Jobs are created; empty: the namespace the run pod is in
    service_account: str  # of the worker pods (GCS access by workload identity); empty: the namespace default
    parallelism: int  # pods of one Job at once
    retries_per_task: int  # backoffLimitPerIndex: pod retries of one task index
    ttl_seconds: int  # ttlSecondsAfterFinished of the Jobs
    tier_cpu: Mapping[int, str]  # memory tier (GiB) -> CPU request of a worker pod
    exports_claim: str  # PersistentVolumeClaim holding CONNECTOME_EXPORTS, mounted read-only in the pods
    gcs_key_secret: str  # Secret with a service-account key for the pods; empty: workload identity
    gcs_key_name: str  # the key of that Secret holding the key file


@dataclass(frozen=True)
class FlightSettings:
    """Arrow Flight ingest (`connectome flight serve` / `upload`)."""

    url: str  # where `connectome flight upload` sends rows (grpc://host:port)
    token: str  # bearer token accepted for every flight dataset when the registry is not deployed; empty: registry tokens only
    timeout_seconds: float  # the upload call's deadline: a male-CNS synapses table streams for a long time (runbook: two hours)


VOLUME_RUNNERS = ("local", "kubernetes")
# The memory tiers (GiB) of every pod the platform sizes: volume worker tasks and step pods.
MEMORY_TIERS_GIB = (4, 8, 16, 24, 32)
DEFAULT_TIER_CPU = {4: "1", 8: "2", 16: "2", 24: "4", 32: "4"}
EXECUTORS = ("multiprocess", "k8s")
# Memory tier of a step pod per stage (the asset group) under the k8s executor: the import holds
# the annotated-id set and ~1 Mi-row batches in flight, the graph stage the whole edge list.
DEFAULT_STAGE_MEMORY_GIB = {"connectome": 16, "graph": 16, "exports": 8, "registry": 4, "volumes": 4}


@dataclass(frozen=True)
class Settings:
    home: Path
    clickhouse_url: str
    clickhouse_database: str
    metadata_url: str
    object_store: str
    catalog: Path
    exports: Path
    dagster_home: Path
    article_cache: Path  # local Parquet cache of derived products (`connectome cache populate`)
    registry: RegistrySettings
    dagster_url: str  # the Dagster webserver `connectome backfill` talks to (`make dev`, or the chart's, port-forwarded)
    volume_tasks: VolumeTaskSettings
    automation: bool  # sensors and automation start running (CONNECTOME_AUTOMATION=on); off: an operator starts them in the UI
    executor: str  # "multiprocess" (one process per step, here) or "k8s" (one pod per step, sized by its stage)
    stage_memory_gib: Mapping[str, int]  # stage (asset group) -> memory tier of its step pods under "k8s"
    flight: FlightSettings


def _tier_cpu(text: str | None) -> dict[int, str]:
    if not text:
        return dict(DEFAULT_TIER_CPU)
    try:
        return {int(tier): str(cpu) for tier, cpu in json.loads(text).items()}
    except (ValueError, AttributeError) as exc:
        raise ValueError(f'CONNECTOME_K8S_TIER_CPU must be a JSON object of memory tier (GiB) to CPU, like {{"4": "1"}}, not {text!r} ({exc})') from None


def _stage_memory(text: str | None) -> dict[str, int]:
    if not text:
        return dict(DEFAULT_STAGE_MEMORY_GIB)
    try:
        given = {str(stage): int(gib) for stage, gib in json.loads(text).items()}
    except (ValueError, AttributeError, TypeError) as exc:
        raise ValueError(f'CONNECTOME_K8S_STAGE_MEMORY must be a JSON object of stage to memory tier (GiB), like {{"connectome": 16}}, not {text!r} ({exc})') from None
    unknown = sorted(set(given) - set(DEFAULT_STAGE_MEMORY_GIB))
    off_tier = sorted(f"{stage}={gib}" for stage, gib in given.items() if gib not in MEMORY_TIERS_GIB)
    if unknown or off_tier:
        raise ValueError(
            f"CONNECTOME_K8S_STAGE_MEMORY: stages are {', '.join(DEFAULT_STAGE_MEMORY_GIB)} and tiers {'/'.join(map(str, MEMORY_TIERS_GIB))} GiB"
            f" ({'unknown ' + ', '.join(unknown) if unknown else ''}{'; ' if unknown and off_tier else ''}{'not a tier: ' + ', '.join(off_tier) if off_tier else ''})"
        )
    return {**DEFAULT_STAGE_MEMORY_GIB, **given}


def _volume_tasks(env: Mapping[str, str]) -> VolumeTaskSettings:
    runner = _choice(env, "CONNECTOME_VOLUME_RUNNER", "local", VOLUME_RUNNERS)
    return VolumeTaskSettings(
        runner=runner,
        local_workers=int(env.get("CONNECTOME_VOLUME_WORKERS", "0")),
        image=env.get("CONNECTOME_K8S_IMAGE", ""),
        namespace=env.get("CONNECTOME_K8S_NAMESPACE", ""),
        service_account=env.get("CONNECTOME_K8S_SERVICE_ACCOUNT", ""),
        parallelism=int(env.get("CONNECTOME_K8S_PARALLELISM", "16")),
        retries_per_task=int(env.get("CONNECTOME_K8S_RETRIES_PER_TASK", "1")),
        ttl_seconds=int(env.get("CONNECTOME_K8S_TTL_SECONDS", "86400")),
        tier_cpu=_tier_cpu(env.get("CONNECTOME_K8S_TIER_CPU")),
        exports_claim=env.get("CONNECTOME_K8S_EXPORTS_CLAIM", ""),
        gcs_key_secret=env.get("CONNECTOME_K8S_GCS_KEY_SECRET", ""),
        gcs_key_name=env.get("CONNECTOME_K8S_GCS_KEY_NAME", "key.json"),
    )


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Read the `CONNECTOME_*` variables, filling in the embedded defaults under the home."""
    env = os.environ if environ is None else environ
    home = Path(env.get("CONNECTOME_HOME", "./.connectome")).expanduser().resolve()
    return Settings(
        home=home,
        clickhouse_url=env.get("CONNECTOME_CLICKHOUSE_URL", f"chdb://{home / 'clickhouse'}"),
        clickhouse_database=env.get("CONNECTOME_CLICKHOUSE_DATABASE", "connectome"),
        metadata_url=env.get("CONNECTOME_METADATA_URL", f"sqlite:///{home / 'metadata.sqlite'}"),
        object_store=env.get("CONNECTOME_OBJECT_STORE", f"file://{home / 'objects'}"),
        catalog=Path(env.get("CONNECTOME_CATALOG", str(home / "catalog"))).expanduser().resolve(),
        exports=Path(env.get("CONNECTOME_EXPORTS", str(home / "exports"))).expanduser().resolve(),
        dagster_home=Path(env.get("DAGSTER_HOME", str(home / "dagster"))).expanduser().resolve(),
        article_cache=Path(env.get("CONNECTOME_ARTICLE_CACHE", str(home / "article_cache"))).expanduser().resolve(),
        registry=RegistrySettings(
            url=env.get("CONNECTOME_REGISTRY_URL", ""),
            token=env.get("CONNECTOME_REGISTRY_TOKEN", ""),
            user=env.get("CONNECTOME_REGISTRY_USER", "platform"),
            secret=env.get("CONNECTOME_REGISTRY_SECRET", ""),
            roots=tuple(r.strip() for r in env.get("CONNECTOME_REGISTRY_ROOTS", "").split(",") if r.strip()),
            public_url=env.get("CONNECTOME_REGISTRY_PUBLIC_URL", ""),
            url_ttl_seconds=int(env.get("CONNECTOME_REGISTRY_URL_TTL", "3600")),
            daily_quota_bytes=int(env.get("CONNECTOME_REGISTRY_DAILY_QUOTA", str(1 << 40))),
            gcs_key_file=env.get("CONNECTOME_REGISTRY_GCS_KEY", ""),
            gcs_endpoint=env.get("CONNECTOME_REGISTRY_GCS_ENDPOINT", "https://storage.googleapis.com"),
        ),
        dagster_url=env.get("CONNECTOME_DAGSTER_URL", "http://127.0.0.1:3000"),
        volume_tasks=_volume_tasks(env),
        automation=_choice(env, "CONNECTOME_AUTOMATION", "on", ("on", "off")) == "on",
        executor=_choice(env, "CONNECTOME_EXECUTOR", "multiprocess", EXECUTORS),
        stage_memory_gib=_stage_memory(env.get("CONNECTOME_K8S_STAGE_MEMORY")),
        flight=FlightSettings(
            url=env.get("CONNECTOME_FLIGHT_URL", "grpc://127.0.0.1:8815"),
            token=env.get("CONNECTOME_FLIGHT_TOKEN", ""),
            timeout_seconds=float(env.get("CONNECTOME_FLIGHT_TIMEOUT", "7200")),
        ),
    )


def _choice(env: Mapping[str, str], name: str, default: str, allowed: tuple[str, ...]) -> str:
    value = env.get(name, default)
    if value not in allowed:
        raise ValueError(f"{name} is {value!r}; it must be one of {', '.join(allowed)}")
    return value
