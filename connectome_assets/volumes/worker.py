"""The one worker entry point: process one task of a manifest.

    python -m connectome_assets.volumes.worker --manifest M [--task-index I]

The task index defaults to `JOB_COMPLETION_INDEX`, so the same command runs as a Kubernetes
Indexed Job (one pod per task). Locally `run_manifest` runs every task in a bounded pool of fresh
processes, sized by the cores and by the memory the tasks' estimates add up to. Each finished
shard prints one JSON line (the run log's progress).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field

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


def run_task(manifest: Manifest, index: int, report: Callable[[dict], None] | None = None) -> TaskResult:
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
                written = write_dvid_shard(reader, manifest.dest_url, scales[manifest.scale], supervoxels=manifest.supervoxels, z_compress=manifest.z_compress)
            finally:
                reader.close()
            line = {
                "shard": job.output_file,
                "source": job.source,
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
        (report or _print_line)({"scale": manifest.scale, "task": index, "seconds": round(written.seconds, 3), **line})
    result.seconds = time.perf_counter() - started
    return result


def _print_line(line: dict) -> None:
    print(json.dumps(line), flush=True)


def _run_task_from_file(path: str, index: int) -> TaskResult:
    return run_task(Manifest.load(path), index)


def pool_size(manifest: Manifest, cores: int | None = None, memory_bytes: int | None = None) -> int:
    """Processes to run at once: no more than the cores, and no more than the largest tasks'
    memory estimates fit in the machine's memory."""
    cores = cores or os.cpu_count() or 1
    memory_bytes = memory_bytes or os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    largest = max((task.memory_bytes for task in manifest.tasks), default=GIB)
    return max(1, min(cores, len(manifest.tasks), memory_bytes // max(largest, 1)))


def run_manifest(path: str, workers: int | None = None) -> list[TaskResult]:
    """Run every task of a saved manifest locally, in fresh processes, at most `workers` at once."""
    manifest = Manifest.load(path)
    if not manifest.tasks:
        return []
    size = workers or pool_size(manifest)
    if size == 1:  # one at a time: no process start-up to pay
        return [run_task(manifest, index) for index in range(len(manifest.tasks))]
    with ProcessPoolExecutor(max_workers=size, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(_run_task_from_file, path, index) for index in range(len(manifest.tasks))]
        return [future.result() for future in futures]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m connectome_assets.volumes.worker", description="Run one task of a volume manifest.")
    parser.add_argument("--manifest", required=True)
    parser.add_argument("--task-index", type=int, default=None, help="default: $JOB_COMPLETION_INDEX (Kubernetes Indexed Job)")
    args = parser.parse_args(argv)
    index = args.task_index if args.task_index is not None else int(os.environ.get("JOB_COMPLETION_INDEX", "-1"))
    try:
        result = run_task(Manifest.load(args.manifest), index)
    except (PlanError, ValueError) as exc:
        print(f"worker: {exc}", file=sys.stderr)
        return 1
    print(json.dumps({"done": asdict(result)}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
