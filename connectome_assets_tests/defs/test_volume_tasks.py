"""The scale assets' task runners: local worker processes and Kubernetes Indexed Jobs, both in a
Dagster Pipes session. The kubernetes runner talks to FakeKubernetesCluster (no cluster can run
here), whose pods are real worker processes; everything else is real (the worker entry point, the
Pipes protocol, dagster-k8s' pod-log reader, tensorstore writes, verification)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dagster as dg
import numpy as np
import pytest

from connectome_assets.cli import dagster_instance, ensure_partition
from connectome_assets.defs.resources import VolumesResource, build_resources
from connectome_assets.defs.volumes.assets import ng_info, scale_assets
from connectome_assets.defs.volumes.checks import scale_checks
from connectome_assets.defs.volumes.tasks import VolumeTasksResource
from connectome_assets.settings import Settings
from connectome_assets.volumes.plan import Manifest
from connectome_assets.volumes.precomputed import open_scale
from connectome_assets_tests.defs.fake_kubernetes import FakeKubernetesCluster
from connectome_assets_tests.defs.test_volumes_defs import make_export

CLUSTERS: dict[str, FakeKubernetesCluster] = {}


class FakeClusterVolumeTasks(VolumeTasksResource):
    """The kubernetes runner with its API calls served by a FakeKubernetesCluster (no cluster here)."""

    cluster: str

    def kubernetes_apis(self) -> tuple[Any, Any]:
        return CLUSTERS[self.cluster].batch, CLUSTERS[self.cluster].core


@pytest.fixture
def cluster(request: pytest.FixtureRequest) -> FakeKubernetesCluster:
    CLUSTERS[request.node.name] = FakeKubernetesCluster()
    yield CLUSTERS[request.node.name]
    del CLUSTERS[request.node.name]


def kubernetes_tasks(cluster_name: str, **fields: Any) -> FakeClusterVolumeTasks:
    return FakeClusterVolumeTasks(
        cluster=cluster_name, runner="kubernetes", image="connectome-assets:test", namespace="connectome-runs",
        parallelism=2, tier_cpu={"4": "1", "8": "2"}, poll_seconds=0.05, **fields,
    )


def materialize_scales(settings: Settings, name: str, tasks: VolumeTasksResource, scales: int) -> tuple[dg.ExecuteInProcessResult, dg.DagsterInstance]:
    instance = dagster_instance(settings)
    ensure_partition(instance, name, "dvid_exports")
    resources = {**build_resources(settings), "volume_tasks": tasks}
    result = dg.materialize(
        [ng_info, *scale_assets[:scales], *scale_checks[:scales]], resources=resources, partition_key=name, instance=instance, raise_on_error=False
    )
    return result, instance


def run_log(instance: dg.DagsterInstance, run_id: str) -> list[str]:
    return [entry.user_message for entry in instance.all_logs(run_id)]


def scale_metadata(result: dg.ExecuteInProcessResult) -> dict[str, dict]:
    return {e.asset_key.to_user_string(): e.materialization.metadata for e in result.get_asset_materialization_events()}


def volumes_of(settings: Settings) -> VolumesResource:
    return build_resources(settings)["volumes"]  # type: ignore[return-value]


@pytest.mark.parametrize("metadata_url", ["sqlite"], indirect=True)
def test_local_runner_reports_through_pipes(settings: Settings) -> None:
    volume = make_export(settings.exports, "local-export")
    result, instance = materialize_scales(settings, "local-export", VolumeTasksResource(local_workers=2), scales=1)
    assert result.success
    log = run_log(instance, result.run_id)
    # the workers' own lines, through Pipes, from both task processes
    for task in (0, 1):
        assert any(line.startswith(f"scale 0 task {task}: shard ") and " chunks written" in line for line in log), log
    assert any(line.startswith("scale 0: done, 8/8 shards, ") and "voxels/s" in line for line in log)
    assert "[pipes] external process successfully opened dagster pipes." in log
    metadata = scale_metadata(result)["ng_scale_0"]
    assert metadata["runner"].value == "local"
    rows = [record.data for record in metadata["tasks"].value.records]
    assert [row["task"] for row in rows] == [0, 1] and sum(row["shards"] for row in rows) == 8
    assert metadata["voxels_per_second"].value > 0
    dest = volumes_of(settings).destination("local-export") + "/"
    assert np.array_equal(open_scale(dest, 0)[:, :, :, 0].read().result(), volume.transpose(2, 1, 0))


@pytest.mark.parametrize("metadata_url", ["sqlite"], indirect=True)
def test_kubernetes_runner_runs_indexed_jobs_and_reads_their_pod_logs(settings: Settings, cluster: FakeKubernetesCluster, request) -> None:
    volume = make_export(settings.exports, "k8s-export")
    result, instance = materialize_scales(settings, "k8s-export", kubernetes_tasks(request.node.name), scales=2)
    assert result.success
    jobs = {name: job.body for (namespace, name), job in cluster.jobs.items()}
    scale0 = [body for name, body in jobs.items() if name.startswith("k8s-export-s0-")]
    assert len(scale0) == 1 and scale0[0]["spec"]["completions"] == 2 and scale0[0]["spec"]["parallelism"] == 2
    (container,) = scale0[0]["spec"]["template"]["spec"]["containers"]
    manifest_url = volumes_of(settings).manifest_url("k8s-export", 0)
    assert container["command"][-4:] == ["--manifest", manifest_url, "--task-offset", "0"]
    assert container["resources"]["limits"] == {"memory": "4Gi"}
    pods = cluster.pods_of("k8s-export-s0-")
    assert sorted(pod.env["JOB_COMPLETION_INDEX"] for pod in pods) == ["0", "1"]
    assert all("DAGSTER_PIPES_CONTEXT" in pod.env and pod.phase == "Succeeded" for pod in pods)
    assert any(name.startswith("k8s-export-s1-") for name in jobs)  # the downres scale too
    log = run_log(instance, result.run_id)
    assert any(line.startswith("scale 0: Indexed Job connectome-runs/k8s-export-s0-") and "2 tasks (4Gi), 2 pods at once" in line for line in log)
    for task in (0, 1):
        assert any(line.startswith(f"scale 0 task {task}: shard ") for line in log), log
    assert any(line.startswith("scale 0: done, 8/8 shards, ") for line in log)
    metadata = scale_metadata(result)
    assert metadata["ng_scale_0"]["runner"].value == "kubernetes"
    rows = [record.data for record in metadata["ng_scale_0"]["tasks"].value.records]
    assert [row["task"] for row in rows] == [0, 1] and sum(row["shards"] for row in rows) == 8
    assert metadata["ng_scale_1"]["source"].value == "downres" and metadata["ng_scale_1"]["verified"].value is True
    dest = volumes_of(settings).destination("k8s-export") + "/"
    assert np.array_equal(open_scale(dest, 0)[:, :, :, 0].read().result(), volume.transpose(2, 1, 0))


@pytest.mark.parametrize("metadata_url", ["sqlite"], indirect=True)
def test_a_failing_index_fails_the_asset_naming_task_and_pods(settings: Settings, cluster: FakeKubernetesCluster, request) -> None:
    make_export(settings.exports, "bad-export")
    broken = sorted((settings.exports / "bad-export" / "s0").glob("*.arrow"))[3]
    broken.write_bytes(b"not an arrow file")  # planning reads names and indexes; the worker reads the shard
    result, instance = materialize_scales(settings, "bad-export", kubernetes_tasks(request.node.name, retries_per_task=1), scales=1)
    assert not result.success
    manifest = Manifest.load(volumes_of(settings).manifest_url("bad-export", 0))
    (bad_task,) = [i for i, task in enumerate(manifest.tasks) if any(job.source == str(broken) for job in task.shards)]
    pods = sorted(pod.name for pod in cluster.pods_of("bad-export-s0-") if pod.index == bad_task)
    assert len(pods) == 2  # the first attempt and one retry (backoffLimitPerIndex 1)
    (failure,) = [e for e in result.all_events if e.is_step_failure]
    description = failure.step_failure_data.user_failure_data.description
    assert "1 of 2 tasks failed" in description
    assert f"task {bad_task} (Job bad-export-s0-" in description and f"index {bad_task}, pods {', '.join(pods)})" in description
    assert "ng_scale_0" not in scale_metadata(result)
    # the worker's own error reached the run log through Pipes, naming the file
    assert any(str(broken) in line for line in run_log(instance, result.run_id))
    good = [pod for pod in cluster.pods_of("bad-export-s0-") if pod.index != bad_task]
    assert [pod.phase for pod in good] == ["Succeeded"]
    written = {Path(p).name for p in Path(volumes_of(settings).destination("bad-export")[len("file://"):]).glob("*/*.shard")}
    (broken_output,) = [job.output_file for job in manifest.shards if job.source == str(broken)]
    # every shard but the broken one's stays written: a rerun (only_missing) finishes the job
    assert written == {job.output_file for job in manifest.shards} - {broken_output}
