"""A manifest as Kubernetes Indexed Jobs (volumes/kubernetes.py), every spec validated strictly
against the Kubernetes 1.31 schemas; and the worker's task selection from JOB_COMPLETION_INDEX."""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path

import kubernetes_validate
import pytest

from connectome_assets.settings import load_settings
from connectome_assets.volumes.kubernetes import indexed_jobs, job_name, tier_slices
from connectome_assets.volumes.plan import Manifest, PlanError, ShardJob, Task
from connectome_assets.volumes.worker import main as worker_main
from connectome_assets.volumes.worker import task_index

KUBE_VERSION = "1.31.0"
MANIFEST_URL = "gs://connectome-prod/objects/volume-manifests/male-cns/manifest-s0.json"
PIPES_ENV = {"DAGSTER_PIPES_CONTEXT": "eJyrVkrNS8zJT0osVrKqVkrLzCkpLQYAPiUG2w==", "DAGSTER_PIPES_MESSAGES": "eJyrVspMTS9V"}


def several_tiers() -> Manifest:
    """Tasks of tiers 4, 4, 8, 16, 16, 16, 32 GiB (as the planner orders them), then a stray 8."""
    tiers = [4, 4, 8, 16, 16, 16, 32, 8]
    tasks = [Task(t, [ShardJob(f"{i:04x}.shard", i, 10, t << 30, source=f"/exports/male-cns/s0/{i}.arrow")]) for i, t in enumerate(tiers)]
    return Manifest("dvid", "gs://connectome-prod/objects/volumes/male-cns/", 0, "8.0x8.0x8.0", tasks)


def kubernetes_settings(**changes):
    env = {
        "CONNECTOME_VOLUME_RUNNER": "kubernetes",
        "CONNECTOME_K8S_IMAGE": "europe-docker.pkg.dev/connectome-prod/images/connectome-assets:2026.11.21",
        "CONNECTOME_K8S_NAMESPACE": "connectome-runs",
        "CONNECTOME_K8S_SERVICE_ACCOUNT": "volume-worker",
        "CONNECTOME_K8S_PARALLELISM": "2",
        "CONNECTOME_K8S_RETRIES_PER_TASK": "3",
        "CONNECTOME_K8S_TIER_CPU": json.dumps({"4": "1", "8": "2", "16": "2", "24": "4", "32": "8"}),
        "CONNECTOME_K8S_EXPORTS_CLAIM": "dvid-exports",
        "CONNECTOME_K8S_GCS_KEY_SECRET": "prod-gcs-key",
        "CONNECTOME_K8S_GCS_KEY_NAME": "sa.json",
    }
    return dataclasses.replace(load_settings(env).volume_tasks, **changes)


def test_one_indexed_job_per_tier_slice_validates_strictly() -> None:
    manifest = several_tiers()
    jobs = indexed_jobs(manifest, MANIFEST_URL, "male-cns-s0-0f3a9c1e", kubernetes_settings(), namespace="connectome-runs",
                        env=PIPES_ENV, labels={"dagster/run-id": "0f3a9c1e-aaaa-bbbb-cccc-123456789abc"}, exports_path="/opt/dagster/data/exports")
    for job in jobs:
        assert kubernetes_validate.validate(job, KUBE_VERSION, strict=True) == "1.31"
    expected = [(4, 0, 2), (8, 2, 1), (16, 3, 3), (32, 6, 1), (8, 7, 1)]
    assert [(s.tier_gib, s.offset, s.count) for s in tier_slices(manifest)] == expected
    assert len(jobs) == len(expected)
    for job, (tier, offset, count) in zip(jobs, expected):
        spec = job["spec"]
        assert job["metadata"]["name"] == f"male-cns-s0-0f3a9c1e-t{tier}-{offset}"
        assert job["metadata"]["namespace"] == "connectome-runs"
        assert (spec["completionMode"], spec["completions"], spec["parallelism"]) == ("Indexed", count, min(count, 2))
        assert (spec["backoffLimitPerIndex"], spec["maxFailedIndexes"], spec["ttlSecondsAfterFinished"]) == (3, count, 86400)
        pod = spec["template"]["spec"]
        assert pod["restartPolicy"] == "Never" and pod["serviceAccountName"] == "volume-worker"
        (container,) = pod["containers"]
        assert container["image"] == "europe-docker.pkg.dev/connectome-prod/images/connectome-assets:2026.11.21"
        assert container["command"] == ["python", "-m", "connectome_assets.volumes.worker", "--manifest", MANIFEST_URL, "--task-offset", str(offset)]
        cpu = {4: "1", 8: "2", 16: "2", 32: "8"}[tier]
        assert container["resources"] == {"requests": {"cpu": cpu, "memory": f"{tier}Gi"}, "limits": {"memory": f"{tier}Gi"}}
        env = {e["name"]: e["value"] for e in container["env"]}
        assert env == {**PIPES_ENV, "GOOGLE_APPLICATION_CREDENTIALS": "/var/secrets/gcs/sa.json"}
        assert {"name": "exports", "mountPath": "/opt/dagster/data/exports", "readOnly": True} in container["volumeMounts"]
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert volumes["exports"]["persistentVolumeClaim"] == {"claimName": "dvid-exports", "readOnly": True}
        assert volumes["gcs-key"]["secret"] == {"secretName": "prod-gcs-key", "items": [{"key": "sa.json", "path": "sa.json"}]}
        labels = spec["template"]["metadata"]["labels"]
        assert labels["app.kubernetes.io/component"] == "volume-worker" and labels["dagster/run-id"].startswith("0f3a9c1e")
    # every task is run by exactly one pod: offset + JOB_COMPLETION_INDEX covers 0..n-1 once
    covered = [int(job["spec"]["template"]["spec"]["containers"][0]["command"][-1]) + i for job in jobs for i in range(job["spec"]["completions"])]
    assert covered == list(range(len(manifest.tasks)))


def test_without_claim_or_key_the_pods_carry_neither() -> None:
    (job, *_) = indexed_jobs(several_tiers(), MANIFEST_URL, "v", kubernetes_settings(exports_claim="", gcs_key_secret="", service_account=""), namespace="default")
    kubernetes_validate.validate(job, KUBE_VERSION, strict=True)
    pod = job["spec"]["template"]["spec"]
    assert "volumes" not in pod and "serviceAccountName" not in pod
    assert "volumeMounts" not in pod["containers"][0] and pod["containers"][0]["env"] == []


def test_strict_validation_would_refuse_a_broken_job() -> None:
    (job, *_) = indexed_jobs(several_tiers(), MANIFEST_URL, "v", kubernetes_settings(), namespace="default")
    broken = copy.deepcopy(job)
    broken["spec"]["completionsMode"] = broken["spec"].pop("completionMode")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBE_VERSION, strict=True)


def test_job_names_stay_short_and_distinct() -> None:
    part = tier_slices(several_tiers())[2]
    long_a = "a-very-long-export-name-from-the-dvid-server-2026-11-21T10:00_A-s11-0f3a9c1e"
    long_b = long_a.replace("_A", "_B")
    names = {job_name(long_a, part), job_name(long_b, part)}
    assert len(names) == 2
    for name in names:
        assert len(name) <= 52 and name.endswith("-t16-3")
        assert all(c.isalnum() or c == "-" for c in name) and name == name.lower()


@pytest.mark.parametrize(
    ("changes", "url", "message"),
    [
        ({"image": ""}, MANIFEST_URL, "no image for the volume worker pods: set CONNECTOME_K8S_IMAGE"),
        ({}, "/home/me/manifest-s0.json", "a worker pod cannot read a manifest on this machine's disk"),
        ({"tier_cpu": {4: "1", 8: "2", 16: "2"}}, MANIFEST_URL, "memory tier 32 GiB has no CPU request in CONNECTOME_K8S_TIER_CPU"),
    ],
)
def test_refusals_name_the_problem(changes, url, message) -> None:
    with pytest.raises(PlanError, match=message):
        indexed_jobs(several_tiers(), url, "v", kubernetes_settings(**changes), namespace="default")


def test_settings_refuse_nonsense() -> None:
    with pytest.raises(ValueError, match="CONNECTOME_VOLUME_RUNNER is 'k8s'; it must be one of local, kubernetes"):
        load_settings({"CONNECTOME_VOLUME_RUNNER": "k8s"})
    with pytest.raises(ValueError, match="CONNECTOME_K8S_TIER_CPU must be a JSON object"):
        load_settings({"CONNECTOME_K8S_TIER_CPU": "4=1"})
    assert load_settings({}).volume_tasks.runner == "local"


def test_task_index_from_offset_and_completion_index(tmp_path: Path, capsys) -> None:
    assert task_index(None, 3, {"JOB_COMPLETION_INDEX": "2"}) == 5
    assert task_index(1, 3, {"JOB_COMPLETION_INDEX": "2"}) == 1
    with pytest.raises(PlanError, match="no task: pass --task-index"):
        task_index(None, 0, {})
    url = several_tiers().save(f"file://{tmp_path}/m/manifest-s0.json")
    assert Manifest.load(url) == several_tiers()
    # the entry point, as pod 4 of the Job starting at task 6: task 10 does not exist
    assert worker_main(["--manifest", url, "--task-offset", "6", "--task-index", "10"]) == 1
    assert "task index 10 is outside the manifest's 8 tasks" in capsys.readouterr().err


def test_manifest_round_trip_through_gcs(gcs_bucket) -> None:
    url = several_tiers().save(f"gs://{gcs_bucket.name}/volume-manifests/male-cns/manifest-s0.json")
    assert Manifest.load(url) == several_tiers()
    with pytest.raises(PlanError, match=f"gs://{gcs_bucket.name}/nothing.json: cannot read the manifest"):
        Manifest.load(f"gs://{gcs_bucket.name}/nothing.json")
