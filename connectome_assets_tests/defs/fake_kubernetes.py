"""FakeKubernetesCluster: the few Kubernetes API calls the volume runner makes, served locally.

A fake, because no Kubernetes cluster can run on these machines (no container runtime, no
kind/k3s). What it keeps real: every Job it is given is first validated strictly against the
Kubernetes 1.31 schemas (as the API server would refuse it); each pod of an Indexed Job is a real
local process running the pod's command with the pod's env plus `JOB_COMPLETION_INDEX`, at most
`parallelism` at once, retried up to `backoffLimitPerIndex` times; its stdout and stderr are the
pod's log (timestamped as the kubelet does, followed live); the Job's status has the conditions
and `failedIndexes` the Job controller sets; and the answers are the kubernetes client's own model
objects. What it ignores: resources, volumes, service accounts and images (the image's `python`
is this interpreter).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import kubernetes
import kubernetes_validate
from kubernetes.client import (
    V1Job,
    V1JobCondition,
    V1JobStatus,
    V1ObjectMeta,
    V1Pod,
    V1PodList,
    V1PodStatus,
)

KUBE_VERSION = "1.31.0"
INDEX_KEY = "batch.kubernetes.io/job-completion-index"


@dataclass
class FakePod:
    name: str
    job: str
    index: int
    env: dict[str, str]
    phase: str = "Pending"
    lines: list[str] = field(default_factory=list)
    process: subprocess.Popen | None = None
    changed: threading.Condition = field(default_factory=threading.Condition)


@dataclass
class FakeJob:
    body: dict[str, Any]
    pods: list[FakePod] = field(default_factory=list)
    failed_indexes: list[int] = field(default_factory=list)
    done: bool = False
    deleted: bool = False


class FakeBatchV1Api:
    def __init__(self, cluster: FakeKubernetesCluster) -> None:
        self.cluster = cluster

    def create_namespaced_job(self, namespace: str, body: dict[str, Any]) -> V1Job:
        return self.cluster.create_job(namespace, body)

    def read_namespaced_job_status(self, name: str, namespace: str) -> V1Job:
        return self.cluster.job_status(namespace, name)

    def delete_namespaced_job(self, name: str, namespace: str, propagation_policy: str = "Background") -> None:
        self.cluster.delete_job(namespace, name)


class FakeCoreV1Api:
    def __init__(self, cluster: FakeKubernetesCluster) -> None:
        self.cluster = cluster

    def list_namespaced_pod(self, namespace: str, label_selector: str = "", field_selector: str = "") -> V1PodList:
        return self.cluster.list_pods(namespace, label_selector)

    def read_namespaced_pod_log(self, name: str, namespace: str, follow: bool = False, timestamps: bool = False, **_: Any) -> Iterator[bytes]:
        return self.cluster.pod_log(namespace, name, follow, timestamps)


class FakeKubernetesCluster:
    """The BatchV1Api / CoreV1Api calls of the volume runner, with pods as local processes."""

    def __init__(self) -> None:
        self.jobs: dict[tuple[str, str], FakeJob] = {}
        self.lock = threading.Lock()
        self.batch = FakeBatchV1Api(self)
        self.core = FakeCoreV1Api(self)
        self._clock = 0

    # -- Jobs ---------------------------------------------------------------------------------
    def create_job(self, namespace: str, body: dict[str, Any]) -> V1Job:
        try:
            kubernetes_validate.validate(body, KUBE_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            raise kubernetes.client.ApiException(status=422, reason=f"Job is invalid: {exc.message}") from None
        name = body["metadata"]["name"]
        if body["metadata"].get("namespace", namespace) != namespace:
            raise kubernetes.client.ApiException(status=400, reason="the namespace of the object does not match the namespace of the request")
        with self.lock:
            if (namespace, name) in self.jobs:
                raise kubernetes.client.ApiException(status=409, reason=f'jobs.batch "{name}" already exists')
            job = self.jobs[(namespace, name)] = FakeJob(body)
        threading.Thread(target=self._control, args=(job,), daemon=True).start()
        return V1Job(metadata=V1ObjectMeta(name=name, namespace=namespace))

    def _control(self, job: FakeJob) -> None:
        """The Job controller for an Indexed Job: every index, `parallelism` at once, retried per index."""
        spec = job.body["spec"]
        assert spec["completionMode"] == "Indexed"
        slots = threading.Semaphore(spec["parallelism"])

        def run_index(index: int) -> None:
            for _attempt in range(spec.get("backoffLimitPerIndex", 0) + 1):
                with slots:
                    if job.deleted:
                        return
                    if self._run_pod(job, index) == "Succeeded":
                        return
            with self.lock:
                job.failed_indexes.append(index)

        threads = [threading.Thread(target=run_index, args=(i,), daemon=True) for i in range(spec["completions"])]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        with self.lock:
            job.done = True

    def _run_pod(self, job: FakeJob, index: int) -> str:
        template = job.body["spec"]["template"]["spec"]
        (container,) = template["containers"]
        name = f"{job.body['metadata']['name']}-{index}-{len(job.pods):05d}"
        env = {e["name"]: e["value"] for e in container.get("env", [])}
        pod = FakePod(name, job.body["metadata"]["name"], index, {**env, "JOB_COMPLETION_INDEX": str(index)})
        with self.lock:
            job.pods.append(pod)
        command = list(container["command"])
        if command[0] == "python":
            command[0] = sys.executable  # the image's python
        process = subprocess.Popen(command, env={**os.environ, **pod.env}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        with pod.changed:
            pod.process, pod.phase = process, "Running"
            pod.changed.notify_all()
        assert process.stdout is not None
        for line in process.stdout:
            with pod.changed:
                pod.lines.append(f"{self._timestamp()} {line.rstrip(chr(10))}")
                pod.changed.notify_all()
        code = process.wait()
        with pod.changed:
            pod.phase = "Succeeded" if code == 0 else "Failed"
            pod.changed.notify_all()
        return pod.phase

    def _timestamp(self) -> str:
        """RFC 3339 with nanoseconds, as `kubectl logs --timestamps`; strictly increasing, like a log's."""
        with self.lock:
            self._clock = max(self._clock + 1, time.time_ns())
            seconds, nanos = divmod(self._clock, 1_000_000_000)
        return f"{datetime.fromtimestamp(seconds, UTC):%Y-%m-%dT%H:%M:%S}.{nanos:09d}Z"

    def job_status(self, namespace: str, name: str) -> V1Job:
        job = self._job(namespace, name)
        with self.lock:
            completions = job.body["spec"]["completions"]
            succeeded = {p.index for p in job.pods if p.phase == "Succeeded"}
            conditions = []
            if job.done:
                kind = "Failed" if job.failed_indexes else "Complete"
                conditions.append(V1JobCondition(type=kind, status="True", reason="FailedIndexes" if job.failed_indexes else None))
            status = V1JobStatus(
                active=sum(p.phase == "Running" for p in job.pods),
                succeeded=len(succeeded),
                failed=sum(p.phase == "Failed" for p in job.pods),
                completed_indexes=",".join(str(i) for i in sorted(succeeded)) or None,
                failed_indexes=",".join(str(i) for i in sorted(job.failed_indexes)) or None,
                conditions=conditions or None,
            )
            assert len(succeeded) <= completions
        return V1Job(metadata=V1ObjectMeta(name=name, namespace=namespace), status=status)

    def delete_job(self, namespace: str, name: str) -> None:
        job = self._job(namespace, name)
        job.deleted = True
        for pod in job.pods:
            if pod.process and pod.process.poll() is None:
                pod.process.kill()

    def _job(self, namespace: str, name: str) -> FakeJob:
        try:
            return self.jobs[(namespace, name)]
        except KeyError:
            raise kubernetes.client.ApiException(status=404, reason=f'jobs.batch "{name}" not found') from None

    # -- Pods ---------------------------------------------------------------------------------
    def list_pods(self, namespace: str, label_selector: str) -> V1PodList:
        key, _, value = label_selector.partition("=")
        assert key in ("job-name", "batch.kubernetes.io/job-name"), f"the fake selects pods by their Job only, not {label_selector!r}"
        job = self._job(namespace, value)
        with self.lock:
            pods = list(job.pods)
        items = [
            V1Pod(
                metadata=V1ObjectMeta(
                    name=p.name,
                    namespace=namespace,
                    labels={"job-name": p.job, "batch.kubernetes.io/job-name": p.job, INDEX_KEY: str(p.index)},
                    annotations={INDEX_KEY: str(p.index)},
                ),
                status=V1PodStatus(phase=p.phase),
            )
            for p in pods
        ]
        return V1PodList(items=items)

    def pod(self, namespace: str, name: str) -> FakePod:
        for (space, _), job in list(self.jobs.items()):
            for pod in job.pods:
                if space == namespace and pod.name == name:
                    return pod
        raise kubernetes.client.ApiException(status=404, reason=f'pods "{name}" not found')

    def pod_log(self, namespace: str, name: str, follow: bool, timestamps: bool) -> Iterator[bytes]:
        pod = self.pod(namespace, name)

        def stream() -> Iterator[bytes]:
            sent = 0
            while True:
                with pod.changed:
                    while follow and sent == len(pod.lines) and pod.phase in ("Pending", "Running"):
                        pod.changed.wait()
                    lines, ended = pod.lines[sent:], pod.phase not in ("Pending", "Running")
                for line in lines:
                    yield ((line if timestamps else line.partition(" ")[2]) + "\n").encode()
                sent += len(lines)
                if not follow or (ended and sent == len(pod.lines)):
                    return

        return stream()

    def pods_of(self, job_prefix: str = "") -> list[FakePod]:
        return [pod for job in self.jobs.values() for pod in job.pods if pod.job.startswith(job_prefix)]
