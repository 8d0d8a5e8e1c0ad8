"""How a scale asset runs the volume worker's tasks: local processes or Kubernetes Indexed Jobs.

Both run the one worker entry point inside one Dagster Pipes session per scale, so the workers'
log lines reach the run log and their per-shard and per-task payloads come back as custom messages
(`volumes.worker.SHARD` / `TASK`), which feed the scale's progress and its metadata.

    local       one process per task index (`JOB_COMPLETION_INDEX` set as in a pod), at most N at
                once; Pipes messages read from each process's output
    kubernetes  one Indexed Job per memory tier (`volumes/kubernetes.py`), the Pipes context in the
                pods' env, messages read from every pod's log with dagster-k8s' pod-logs reader;
                waits for the Jobs and names the task indices and pods that failed
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import dagster as dg
from dagster._core.pipes.utils import extract_message_or_forward_to_stdout  # the function dagster-k8s' reader uses
from dagster_pipes import PipesDefaultMessageWriter
from pydantic import Field

from connectome_assets.settings import DEFAULT_TIER_CPU, VolumeTaskSettings
from connectome_assets.volumes.build import TaskRunner
from connectome_assets.volumes.plan import Manifest
from connectome_assets.volumes.worker import SHARD, TaskResult, TasksFailed, pool_size, read_worker_message, run_task_processes

class OneMessageAtATime:
    """The session's message handler, called from one thread per pod or process: one message at a time."""

    def __init__(self, handler: dg.PipesMessageHandler) -> None:
        self._handler = handler
        self._lock = threading.Lock()

    def handle_message(self, message: Any) -> None:
        with self._lock:
            self._handler.handle_message(message)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._handler, name)


class WorkerOutputMessageReader(dg.PipesMessageReader):
    """Pipes messages from the output of local worker processes (they write them to stderr, as in a pod)."""

    def __init__(self, writers: int) -> None:
        self._writers = writers
        self._handler: OneMessageAtATime | None = None

    @property
    def expected_writer_count(self) -> int:
        return self._writers

    @contextmanager
    def read_messages(self, handler: dg.PipesMessageHandler) -> Iterator[dict[str, Any]]:
        self._handler = OneMessageAtATime(handler)
        try:
            yield {PipesDefaultMessageWriter.STDIO_KEY: PipesDefaultMessageWriter.STDERR}
        finally:
            self._handler = None

    def consume_line(self, line: str) -> None:
        """A Pipes message goes to the session; any other line to the run's stdout (compute logs)."""
        assert self._handler is not None, "only inside the Pipes session"
        extract_message_or_forward_to_stdout(self._handler, line)  # type: ignore[arg-type]

    def no_messages_debug_text(self) -> str:
        return "Read the local worker processes' output (stdout and stderr) for Pipes messages."


class WorkerPayloads:
    """The workers' custom messages as they arrive: shard lines to `on_shard`, task results kept."""

    def __init__(self, session: dg.PipesSession, on_shard: Callable[[dict], None]) -> None:
        self.session, self.on_shard = session, on_shard
        self.seen = 0
        self.results: dict[int, TaskResult] = {}
        self._lock = threading.Lock()

    def drain(self) -> None:
        with self._lock:
            messages = self.session.message_handler.get_custom_messages()
            for payload in messages[self.seen :]:
                message = read_worker_message(payload)
                if message is None:
                    continue
                if message[0] == SHARD:
                    self.on_shard(message[1])
                else:
                    self.results[message[1].task] = message[1]
            self.seen = len(messages)

    def task_results(self, count: int) -> list[TaskResult]:
        missing = [index for index in range(count) if index not in self.results]
        if missing:
            raise TasksFailed(f"tasks {listed(missing)} ended without reporting a result; see the run log for their output")
        return [self.results[index] for index in range(count)]


def listed(indices: Sequence[int]) -> str:
    return ", ".join(str(i) for i in indices)


class VolumeTasksResource(dg.ConfigurableResource):
    """How the scale assets run the volume worker's tasks (from CONNECTOME_VOLUME_RUNNER and CONNECTOME_K8S_*)."""

    runner: str = Field(default="local", description="local: worker processes on this machine; kubernetes: one Indexed Job per memory tier.")
    local_workers: int = Field(default=0, description="Local processes at once; 0: by cores and the tasks' memory estimates.")
    image: str = Field(default="", description="Image of the worker pods.")
    namespace: str = Field(default="", description="Namespace of the Jobs; empty: the run pod's own.")
    service_account: str = Field(default="", description="Service account of the worker pods.")
    parallelism: int = Field(default=16, description="Pods of one Job at once.")
    retries_per_task: int = Field(default=1, description="backoffLimitPerIndex: retries of one task's pod.")
    ttl_seconds: int = Field(default=86400, description="ttlSecondsAfterFinished of the Jobs.")
    tier_cpu: dict[str, str] = Field(default_factory=lambda: {str(t): cpu for t, cpu in DEFAULT_TIER_CPU.items()}, description="CPU request per memory tier (GiB), e.g. {'16': '2'}.")
    exports_claim: str = Field(default="", description="PersistentVolumeClaim with the DVID exports, mounted read-only at the exports path.")
    gcs_key_secret: str = Field(default="", description="Secret holding a service-account key for the pods' GCS access; empty: workload identity.")
    gcs_key_name: str = Field(default="key.json", description="The key of that Secret holding the key file.")
    poll_seconds: float = Field(default=5.0, description="How often the Jobs and their pods are looked at.")

    @classmethod
    def from_settings(cls, settings: VolumeTaskSettings) -> VolumeTasksResource:
        return cls(**{**dataclasses.asdict(settings), "tier_cpu": {str(tier): cpu for tier, cpu in settings.tier_cpu.items()}})

    def job_settings(self) -> VolumeTaskSettings:
        """The same values as the library's settings (pydantic config keys are strings: tiers back to ints)."""
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(VolumeTaskSettings)}
        return VolumeTaskSettings(**{**values, "tier_cpu": {int(tier): cpu for tier, cpu in self.tier_cpu.items()}})

    def kubernetes_apis(self) -> tuple[Any, Any]:
        """BatchV1Api and CoreV1Api: in-cluster (a run pod), else the local kubeconfig."""
        import kubernetes  # only the kubernetes runner pays for importing the client

        try:
            kubernetes.config.load_incluster_config()
        except kubernetes.config.ConfigException:
            kubernetes.config.load_kube_config()
        return kubernetes.client.BatchV1Api(), kubernetes.client.CoreV1Api()

    def task_runner(self, context: dg.AssetExecutionContext, exports_path: str) -> TaskRunner:
        """The `build_scale` runner for this asset's run."""

        def run(manifest_url: str, manifest: Manifest, on_shard: Callable[[dict], None]) -> list[TaskResult]:
            if not manifest.tasks:  # every shard already written (only_missing): nothing to launch
                return []
            if self.runner == "kubernetes":
                from connectome_assets.defs.volumes.indexed_jobs import run_indexed_jobs  # the kubernetes client loads only here

                batch, core = self.kubernetes_apis()
                return run_indexed_jobs(context, batch, core, self.job_settings(), manifest_url, manifest, on_shard, exports_path, self.poll_seconds)
            return self._run_local(context, manifest_url, manifest, on_shard)

        return run

    def _run_local(self, context: dg.AssetExecutionContext, manifest_url: str, manifest: Manifest, on_shard: Callable[[dict], None]) -> list[TaskResult]:
        count = len(manifest.tasks)
        reader = WorkerOutputMessageReader(count)
        with dg.open_pipes_session(context=context, context_injector=dg.PipesEnvContextInjector(), message_reader=reader) as session:
            payloads = WorkerPayloads(session, on_shard)

            def on_line(index: int, line: str) -> None:
                reader.consume_line(line)
                payloads.drain()

            workers = self.local_workers or pool_size(manifest)
            context.log.info(f"scale {manifest.scale}: {count} tasks as local worker processes, {workers} at once ({manifest_url})")
            codes = run_task_processes(manifest_url, range(count), workers, on_line, env=session.get_bootstrap_env_vars())
        payloads.drain()
        failed = [index for index, code in codes.items() if code != 0]
        if failed:
            raise TasksFailed(f"{manifest_url}: tasks {listed(failed)} of {count} failed (worker processes exited non-zero); their errors are in the run log")
        return payloads.task_results(count)
