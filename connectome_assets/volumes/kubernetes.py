"""A saved manifest as Kubernetes Indexed Jobs: one pod per task, memory from the task's tier.

An Indexed Job has one pod template, so there is one Job per run of consecutive tasks of one
memory tier (the planner orders tasks by tier, so normally one Job per tier present). Pod `i` of
the Job starting at task `offset` runs task `offset + JOB_COMPLETION_INDEX` with the one worker
entry point. The specs are plain manifests (dicts) for the Kubernetes API; nothing here talks to
a cluster.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from connectome_assets.settings import VolumeTaskSettings
from connectome_assets.volumes.plan import Manifest, PlanError
from connectome_assets.volumes.worker import worker_command

GCS_KEY_DIR = "/var/secrets/gcs"
WORKER_CONTAINER = "worker"
_NAME_MAX = 52  # a Job's pods are named <job>-<index>-<random 5>; their label values stay within 63


@dataclass(frozen=True)
class TierSlice:
    """Consecutive tasks `offset … offset + count − 1` of one memory tier: one Indexed Job."""

    tier_gib: int
    offset: int
    count: int


def tier_slices(manifest: Manifest) -> list[TierSlice]:
    slices: list[TierSlice] = []
    for index, task in enumerate(manifest.tasks):
        if slices and slices[-1].tier_gib == task.tier_gib:
            last = slices[-1]
            slices[-1] = TierSlice(last.tier_gib, last.offset, last.count + 1)
        else:
            slices.append(TierSlice(task.tier_gib, index, 1))
    return slices


def job_name(base: str, part: TierSlice) -> str:
    """A DNS-1123 name, unique per slice, short enough for the pods' names and labels."""
    suffix = f"-t{part.tier_gib}-{part.offset}"
    clean = re.sub(r"[^a-z0-9-]+", "-", base.lower()).strip("-") or "volume"
    room = _NAME_MAX - len(suffix)
    if len(clean) > room:  # keep it unique: a digest of the whole base replaces the cut tail
        digest = hashlib.sha256(base.encode()).hexdigest()[:8]
        clean = f"{clean[: room - 9].rstrip('-')}-{digest}"
    return clean + suffix


def indexed_jobs(
    manifest: Manifest,
    manifest_url: str,
    base_name: str,
    settings: VolumeTaskSettings,
    *,
    namespace: str,
    env: Mapping[str, str] | None = None,
    labels: Mapping[str, str] | None = None,
    exports_path: str = "",
) -> list[dict[str, Any]]:
    """One `batch/v1` Indexed Job per tier slice of the manifest, ready for `create_namespaced_job`."""
    if not settings.image:
        raise PlanError("no image for the volume worker pods: set CONNECTOME_K8S_IMAGE (the chart sets it to the user-code image)")
    if "://" not in manifest_url:
        raise PlanError(f"{manifest_url}: a worker pod cannot read a manifest on this machine's disk; store it in the object store (gs://)")
    jobs = []
    for part in tier_slices(manifest):
        cpu = settings.tier_cpu.get(part.tier_gib)
        if cpu is None:
            raise PlanError(f"memory tier {part.tier_gib} GiB has no CPU request in CONNECTOME_K8S_TIER_CPU ({dict(settings.tier_cpu)})")
        memory = f"{part.tier_gib}Gi"
        job_labels = {"app.kubernetes.io/part-of": "connectome-assets", "app.kubernetes.io/component": "volume-worker", **(labels or {})}
        container_env = [{"name": key, "value": value} for key, value in (env or {}).items()]
        mounts: list[dict[str, Any]] = []
        volumes: list[dict[str, Any]] = []
        if settings.gcs_key_secret:
            key = settings.gcs_key_name
            container_env.append({"name": "GOOGLE_APPLICATION_CREDENTIALS", "value": f"{GCS_KEY_DIR}/{key}"})
            mounts.append({"name": "gcs-key", "mountPath": GCS_KEY_DIR, "readOnly": True})
            volumes.append({"name": "gcs-key", "secret": {"secretName": settings.gcs_key_secret, "items": [{"key": key, "path": key}]}})
        if settings.exports_claim:
            # DVID shards are read by local path: the pods see the exports where the planner did
            mounts.append({"name": "exports", "mountPath": exports_path, "readOnly": True})
            volumes.append({"name": "exports", "persistentVolumeClaim": {"claimName": settings.exports_claim, "readOnly": True}})
        container: dict[str, Any] = {
            "name": WORKER_CONTAINER,
            "image": settings.image,
            "command": worker_command(manifest_url, part.offset),
            "env": container_env,
            "resources": {"requests": {"cpu": cpu, "memory": memory}, "limits": {"memory": memory}},
        }
        if mounts:
            container["volumeMounts"] = mounts
        pod_spec: dict[str, Any] = {"restartPolicy": "Never", "containers": [container]}
        if settings.service_account:
            pod_spec["serviceAccountName"] = settings.service_account
        if volumes:
            pod_spec["volumes"] = volumes
        jobs.append(
            {
                "apiVersion": "batch/v1",
                "kind": "Job",
                "metadata": {"name": job_name(base_name, part), "namespace": namespace, "labels": job_labels},
                "spec": {
                    "completionMode": "Indexed",
                    "completions": part.count,
                    "parallelism": max(1, min(part.count, settings.parallelism)),
                    "backoffLimitPerIndex": settings.retries_per_task,
                    # every index runs even when one has failed; the runner names the failed ones
                    "maxFailedIndexes": part.count,
                    "ttlSecondsAfterFinished": settings.ttl_seconds,
                    "template": {"metadata": {"labels": job_labels}, "spec": pod_spec},
                },
            }
        )
    return jobs
