"""The kubernetes runner of the volume tasks: the manifest's Indexed Jobs inside one Pipes session.

Imported only when CONNECTOME_VOLUME_RUNNER=kubernetes (the kubernetes client costs ~0.8 s to
import). Talks to the cluster through the BatchV1Api / CoreV1Api calls it is given: create and read
Jobs, list their pods, read (follow) pod logs, and delete the Jobs of a run that was stopped.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import dagster as dg
import kubernetes
from dagster_k8s.pipes import PipesK8sPodLogsMessageReader
from dagster_k8s.utils import detect_current_namespace

from connectome_assets.defs.volumes.tasks import OneMessageAtATime, WorkerPayloads
from connectome_assets.settings import VolumeTaskSettings
from connectome_assets.volumes.kubernetes import indexed_jobs, tier_slices
from connectome_assets.volumes.plan import Manifest
from connectome_assets.volumes.worker import TaskResult, TasksFailed

_FOLLOWED_PHASES = ("Running", "Succeeded", "Failed")  # a pod with logs to read
_INDEX_ANNOTATION = "batch.kubernetes.io/job-completion-index"


class IndexedJobPodLogsMessageReader(PipesK8sPodLogsMessageReader):
    """dagster-k8s' pod-logs reader for the many pods of Indexed Jobs: one writer per task, and
    messages from the pods' log followers (one thread each) handled one at a time."""

    def __init__(self, writers: int) -> None:
        self._writers = writers

    @property
    def expected_writer_count(self) -> int:
        return self._writers

    @contextmanager
    def read_messages(self, handler: dg.PipesMessageHandler) -> Iterator[dict[str, Any]]:
        with super().read_messages(OneMessageAtATime(handler)) as params:  # type: ignore[arg-type]
            yield params


def _parse_indexes(text: str | None) -> list[int]:
    """A Job's `failedIndexes`, e.g. "1,3-5", as a list."""
    indices: list[int] = []
    for part in (text or "").split(","):
        if part:
            first, _, last = part.partition("-")
            indices += range(int(first), int(last or first) + 1)
    return indices


def _finished(status: Any) -> bool:
    return any(c.type in ("Complete", "Failed") and c.status == "True" for c in (status.conditions or []))


def run_indexed_jobs(
    context: dg.AssetExecutionContext,
    batch: Any,
    core: Any,
    settings: VolumeTaskSettings,
    manifest_url: str,
    manifest: Manifest,
    on_shard: Callable[[dict], None],
    exports_path: str,
    poll_seconds: float,
) -> list[TaskResult]:
    """Create the manifest's Indexed Jobs with the Pipes context in their pods' env, follow every
    pod's log into the session, wait for the Jobs, and fail naming the tasks and pods that failed."""
    namespace = settings.namespace or detect_current_namespace(None) or "default"
    count = len(manifest.tasks)
    reader = IndexedJobPodLogsMessageReader(count)
    followers: dict[str, threading.Thread] = {}
    run_id = context.run.run_id
    with dg.open_pipes_session(context=context, context_injector=dg.PipesEnvContextInjector(), message_reader=reader) as session:
        payloads = WorkerPayloads(session, on_shard)
        jobs = indexed_jobs(
            manifest,
            manifest_url,
            f"{context.partition_key}-s{manifest.scale}-{run_id[:8]}",
            settings,
            namespace=namespace,
            env=session.get_bootstrap_env_vars(),
            labels={"dagster/run-id": run_id, "connectome/scale": str(manifest.scale)},
            exports_path=exports_path,
        )
        names = [job["metadata"]["name"] for job in jobs]
        finished = False
        try:
            for job in jobs:
                batch.create_namespaced_job(namespace, job)
                spec = job["spec"]
                context.log.info(
                    f"scale {manifest.scale}: Indexed Job {namespace}/{job['metadata']['name']}: {spec['completions']} tasks"
                    f" ({job['spec']['template']['spec']['containers'][0]['resources']['limits']['memory']}), {spec['parallelism']} pods at once"
                )
            while True:
                for name in names:
                    for pod in core.list_namespaced_pod(namespace, label_selector=f"job-name={name}").items:
                        if pod.metadata.name not in followers and pod.status.phase in _FOLLOWED_PHASES:
                            followers[pod.metadata.name] = _follow(context, reader, core, pod.metadata.name, namespace)
                payloads.drain()
                if all(_finished(batch.read_namespaced_job_status(name, namespace).status) for name in names):
                    break
                time.sleep(poll_seconds)
            finished = True
        finally:
            if not finished:  # the run was stopped or the API failed: stop the pods too
                for name in names:
                    try:
                        batch.delete_namespaced_job(name, namespace, propagation_policy="Background")
                    except kubernetes.client.ApiException as exc:
                        context.log.warning(f"could not delete Job {namespace}/{name}: {exc.reason}")
        for thread in followers.values():
            thread.join()
    payloads.drain()
    failures = _failures(batch, core, namespace, names, manifest)
    if failures:
        raise TasksFailed(f"{manifest_url}: {len(failures)} of {count} tasks failed: {'; '.join(failures)}; their output is in the run log")
    return payloads.task_results(count)


def _follow(context: dg.AssetExecutionContext, reader: IndexedJobPodLogsMessageReader, core: Any, pod: str, namespace: str) -> threading.Thread:
    def follow() -> None:
        try:
            reader.consume_pod_logs(context=context, core_api=core, pod_name=pod, namespace=namespace)
        except Exception as exc:  # a lost log stream loses messages, not the task: the Job's status decides
            context.log.warning(f"pod {namespace}/{pod}: stopped reading its log ({exc})")

    thread = threading.Thread(target=follow, name=f"logs-{pod}", daemon=True)
    thread.start()
    return thread


def _failures(batch: Any, core: Any, namespace: str, names: list[str], manifest: Manifest) -> list[str]:
    """'task 5 (pods a, b)' for every failed index of every Job, as manifest task numbers."""
    failures = []
    for name, part in zip(names, tier_slices(manifest)):
        failed = _parse_indexes(batch.read_namespaced_job_status(name, namespace).status.failed_indexes)
        if not failed:
            continue
        pods: dict[int, list[str]] = {}
        for pod in core.list_namespaced_pod(namespace, label_selector=f"job-name={name}").items:
            if pod.status.phase == "Failed":
                index = int((pod.metadata.annotations or {}).get(_INDEX_ANNOTATION, -1))
                pods.setdefault(index, []).append(pod.metadata.name)
        for index in failed:
            failures.append(f"task {part.offset + index} (Job {name} index {index}, pods {', '.join(sorted(pods.get(index, []))) or 'gone'})")
    return failures
