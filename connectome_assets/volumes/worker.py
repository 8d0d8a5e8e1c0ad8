"""The one worker entry point: process one task of a manifest.

    python -m connectome_assets.volumes.worker --manifest URL [--task-index I | --task-offset O]

The manifest is a local path, `file://` or `gs://` URL. The task index defaults to `--task-offset`
+ `JOB_COMPLETION_INDEX`, so the same command runs as a Kubernetes Indexed Job (one pod per task,
one Job per memory tier, see `volumes/kubernetes.py`) and as local processes (`run_task_processes`,
which sets `JOB_COMPLETION_INDEX` the same way). Each finished shard and the task's result are
reported as JSON lines on stdout, or, when Dagster launched the process with a Pipes context, as
Pipes messages (a run-log line per shard, the same payloads as custom messages).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

from dagster_pipes import PipesEnvVarParamsLoader, open_dagster_pipes

from connectome_assets.volumes.plan import GIB, Manifest, PlanError
from connectome_assets.volumes.precomputed import read_info, scales_of
from connectome_assets.volumes.pyramid import write_downres_shard
from connectome_assets.volumes.s0 import write_dvid_shard
from connectome_assets.volumes.shard_reader import DvidShardReader


@dataclass
class TaskResult:
    task: int
    shards: int = 0
    chunks_written: int = 0
    voxels: int = 0
    seconds: float = 0.0
    outputs: list[str] = field(default_factory=list)


def run_task(manifest: Manifest, index: int, report: Callable[[dict], None]) -> TaskResult:
    """Write every output shard of task `index`; raises on the first bad shard (named in the error)."""
    if not 0 <= index < len(manifest.tasks):
        raise PlanError(f"task index {index} is outside the manifest's {len(manifest.tasks)} tasks")
    started = time.perf_counter()
    scales = scales_of(read_info(manifest.dest_url))
    result = TaskResult(index)
    for job in manifest.tasks[index].shards:
        if manifest.kind == "dvid":
            reader = DvidShardReader(job.source)
            try:
                written = write_dvid_shard(
                    reader, manifest.dest_url, scales[manifest.scale], supervoxels=manifest.supervoxels, z_compress=manifest.z_compress, writer=manifest.writer
                )
            finally:
                reader.close()
            line = {
                "shard": job.output_file,
                "source": job.source,
                "writer": written.writer,
                "chunks": written.chunks,
                "written": written.written,
                "all_zero": written.all_zero,
                "outside": written.outside,
                "voxels": written.voxels,
            }
            result.voxels += written.voxels
        else:
            written = write_downres_shard(manifest.dest_url, scales[manifest.scale - 1], scales[manifest.scale], job, manifest.rule)
            line = {"shard": job.output_file, "chunks": written.chunks, "written": written.written, "all_zero": written.all_zero, "input_voxels": written.input_voxels}
            result.voxels += written.input_voxels
        result.shards += 1
        result.chunks_written += written.written
        result.outputs.append(job.output_file)
        report({"scale": manifest.scale, "task": index, "seconds": round(written.seconds, 3), **line})
    result.seconds = time.perf_counter() - started
    return result


def pool_size(manifest: Manifest, cores: int | None = None, memory_bytes: int | None = None) -> int:
    """Processes to run at once: no more than the cores, and no more than the largest tasks'
    memory estimates fit in the machine's memory."""
    cores = cores or os.cpu_count() or 1
    memory_bytes = memory_bytes or os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    largest = max((task.memory_bytes for task in manifest.tasks), default=GIB)
    return max(1, min(cores, len(manifest.tasks), memory_bytes // max(largest, 1)))


# What a worker reports, the same payloads whichever way they travel: as JSON lines on stdout
# (plain), or as Dagster Pipes custom messages (under Pipes, locally or in a pod).
SHARD, TASK = "shard", "task"


def read_worker_message(payload: Any) -> tuple[str, Any] | None:
    """(SHARD, line) or (TASK, TaskResult) from a worker payload; None for anything else."""
    if isinstance(payload, dict) and len(payload) == 1:
        ((kind, body),) = payload.items()
        if kind == SHARD and isinstance(body, dict):
            return SHARD, body
        if kind == TASK and isinstance(body, dict):
            return TASK, TaskResult(**body)
    return None


def shard_text(line: dict) -> str:
    """One finished shard as a person reads it in the run log."""
    voxels = line.get("voxels", line.get("input_voxels", 0))
    return (
        f"scale {line['scale']} task {line['task']}: shard {line['shard']} done, {line['written']} of {line['chunks']} chunks written"
        f" ({line['all_zero']} all-zero), {voxels:,} voxels in {line['seconds']} s"
    )


class _PlainReporter:
    """JSON lines on stdout: what the local runner (and a person) reads."""

    def shard(self, line: dict) -> None:
        print(json.dumps({SHARD: line}), flush=True)

    def done(self, result: TaskResult) -> None:
        print(json.dumps({TASK: asdict(result)}), flush=True)

    def error(self, text: str) -> None:
        print(text, file=sys.stderr, flush=True)


class _PipesReporter:
    """Dagster Pipes messages: a log line per shard for the run log, the payloads as custom messages."""

    def __init__(self, pipes: Any) -> None:
        self.pipes = pipes

    def shard(self, line: dict) -> None:
        self.pipes.log.info(shard_text(line))
        self.pipes.report_custom_message({SHARD: line})

    def done(self, result: TaskResult) -> None:
        self.pipes.log.info(f"task {result.task}: {result.shards} shards, {result.chunks_written} chunks written in {result.seconds:.1f} s")
        self.pipes.report_custom_message({TASK: asdict(result)})

    def error(self, text: str) -> None:
        self.pipes.log.error(text)


@contextmanager
def worker_reporter() -> Iterator[_PlainReporter | _PipesReporter]:
    """Pipes when Dagster launched this process with a Pipes context, else plain JSON lines."""
    if not PipesEnvVarParamsLoader().is_dagster_pipes_process():
        yield _PlainReporter()
        return
    with open_dagster_pipes() as pipes:
        yield _PipesReporter(pipes)


class TasksFailed(RuntimeError):
    """Some tasks of a manifest failed; the message names them and what they said last."""


def task_index(task_index: int | None, task_offset: int, environ: Mapping[str, str] = os.environ) -> int:
    """The task to run: `--task-index`, else `--task-offset` + `JOB_COMPLETION_INDEX` (one Indexed Job
    per memory tier runs a contiguous slice of the manifest's tasks)."""
    if task_index is not None:
        return task_index
    if "JOB_COMPLETION_INDEX" not in environ:
        raise PlanError("no task: pass --task-index, or run as a Kubernetes Indexed Job (JOB_COMPLETION_INDEX)")
    return task_offset + int(environ["JOB_COMPLETION_INDEX"])


def worker_command(manifest_url: str, task_offset: int = 0) -> list[str]:
    """The worker entry point, as a pod's or a local process's command."""
    return ["python", "-m", "connectome_assets.volumes.worker", "--manifest", manifest_url, "--task-offset", str(task_offset)]


def run_task_processes(
    manifest_url: str,
    indices: Sequence[int],
    workers: int,
    on_line: Callable[[int, str], None],
    env: Mapping[str, str] | None = None,
) -> dict[int, int]:
    """Run the worker entry point once per task index, as a pod of an Indexed Job would
    (`JOB_COMPLETION_INDEX` set), at most `workers` at once. Every output line (stdout and stderr)
    goes to `on_line(index, line)` as it comes, one call at a time; returns each index's exit code."""
    command = [sys.executable, *worker_command(manifest_url)[1:]]
    serial = threading.Lock()

    def run_one(index: int) -> int:
        process_env = {**os.environ, **(env or {}), "JOB_COMPLETION_INDEX": str(index)}
        with subprocess.Popen(command, env=process_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1) as process:
            assert process.stdout is not None
            for line in process.stdout:
                with serial:
                    on_line(index, line.rstrip("\n"))
        return process.returncode

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        return dict(zip(indices, pool.map(run_one, indices)))


class LocalTaskRunner:
    """Every task of a manifest as a local process of the worker entry point (plain JSON lines), at
    most `workers` at once (default: by cores and memory); with one worker, in this process."""

    def __init__(self, workers: int | None = None) -> None:
        self.workers = workers

    def __call__(self, manifest_url: str, manifest: Manifest, on_shard: Callable[[dict], None]) -> list[TaskResult]:
        workers = self.workers or pool_size(manifest)
        if workers == 1:  # one at a time: in this process, no start-up or compilation to pay per task
            return [run_task(manifest, index, on_shard) for index in range(len(manifest.tasks))]
        results: dict[int, TaskResult] = {}
        last_words: dict[int, list[str]] = {}

        def on_line(index: int, text: str) -> None:
            try:
                message = read_worker_message(json.loads(text))
            except ValueError:
                message = None
            if message is None:
                last_words.setdefault(index, []).append(text)
                print(text, file=sys.stderr)
            elif message[0] == SHARD:
                on_shard(message[1])
            else:
                results[index] = message[1]

        indices = range(len(manifest.tasks))
        codes = run_task_processes(manifest_url, indices, workers, on_line)
        failed = [index for index in indices if codes[index] != 0 or index not in results]
        if failed:
            said = "; ".join(f"task {i} exited with {codes[i]}: {' '.join(last_words.get(i, [])[-3:]) or 'no output'}" for i in failed)
            raise TasksFailed(f"{manifest_url}: {len(failed)} of {len(manifest.tasks)} tasks failed ({said})")
        return [results[index] for index in indices]


def run_manifest(manifest_url: str, workers: int | None = None, on_shard: Callable[[dict], None] | None = None) -> list[TaskResult]:
    """Run every task of a saved manifest locally, in fresh processes, at most `workers` at once."""
    return LocalTaskRunner(workers)(manifest_url, Manifest.load(manifest_url), on_shard or (lambda line: None))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m connectome_assets.volumes.worker", description="Run one task of a volume manifest.")
    parser.add_argument("--manifest", required=True, help="path, file:// or gs:// URL of the manifest")
    parser.add_argument("--task-index", type=int, default=None, help="default: --task-offset + $JOB_COMPLETION_INDEX (Kubernetes Indexed Job)")
    parser.add_argument("--task-offset", type=int, default=0, help="the first task of this Indexed Job's slice of the manifest")
    args = parser.parse_args(argv)
    with worker_reporter() as reporter:
        try:
            index = task_index(args.task_index, args.task_offset)
            result = run_task(Manifest.load(args.manifest), index, reporter.shard)
        except (PlanError, ValueError) as exc:
            reporter.error(f"worker: {exc}")
            return 1
        reporter.done(result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
