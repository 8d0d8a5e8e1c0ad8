"""Building a volume scale by scale: the one path the CLI and the Dagster assets take.

    prepare_volume   the multiscale info, from the export's spec, written before any scale
    build_scale      plan (DVID shards of s<k>/, or downres from k−1) -> run the tasks -> verify
                     every planned shard and a sample of chunks; the next scale is built only on a
                     verified one (the caller stops on a failed verification)

How the tasks run is the caller's `TaskRunner`: local processes (`worker.LocalTaskRunner`, the
CLI), or, in Dagster, local processes or Kubernetes Indexed Jobs inside a Pipes session
(`defs/volumes/tasks.py`). Planning, progress and verification stay this one path.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from connectome_assets.progress import Progress

from connectome_assets.volumes.plan import Manifest, PlanError, plan_downres_scale, plan_dvid_scale
from connectome_assets.volumes.precomputed import destination_url, info_from_spec, load_spec, read_info, scales_of, write_info
from connectome_assets.volumes.verify import DvidValidation, ScaleVerification, validate_dvid, verify_scale
from connectome_assets.volumes.worker import LocalTaskRunner, TaskResult

_SCALE_DIR = re.compile(r"^s(\d+)$")


def find_spec(export_dir: str | Path) -> Path:
    """The export's neuroglancer volume spec: the one `*.json` file at its top level."""
    found = sorted(Path(export_dir).glob("*.json"))
    if len(found) != 1:
        listed = ", ".join(p.name for p in found) or "none"
        raise PlanError(f"{export_dir}: expected exactly one volume spec (*.json), found {listed}; pass --spec")
    return found[0]


def dvid_scales(export_dir: str | Path) -> list[int]:
    """The scales DVID exported: `s<k>/` folders holding `.arrow` shards."""
    root = Path(export_dir)
    scales = [int(m[1]) for p in root.iterdir() if p.is_dir() and (m := _SCALE_DIR.match(p.name)) and any(p.glob("*.arrow"))] if root.is_dir() else []
    return sorted(scales)


def prepare_volume(export_dir: str | Path, dest: str, spec_path: str | Path | None = None, z_compress: int = 0) -> tuple[str, dict[str, Any]]:
    """Write the whole multiscale info to the destination; returns (destination URL, info)."""
    spec_file = Path(spec_path) if spec_path else find_spec(export_dir)
    info = info_from_spec(load_spec(spec_file), str(spec_file), z_compress)
    url = destination_url(dest)
    write_info(url, info)
    return url, info


class TaskRunner(Protocol):
    """Runs every task of a saved manifest, calling `on_shard` with each finished shard's line;
    raises `worker.TasksFailed` naming the tasks that failed."""

    def __call__(self, manifest_url: str, manifest: Manifest, on_shard: Callable[[dict], None]) -> list[TaskResult]: ...


@dataclass
class ScaleBuild:
    scale: int
    kind: str
    manifest_url: str
    planned_shards: int
    results: list[TaskResult]
    verification: ScaleVerification
    validation: DvidValidation | None
    seconds: float
    progress: dict[str, Any]  # the run's figures: voxels, shards, seconds, voxels_per_second
    writer: str = ""  # dvid: the writer that ran ("transcode" or "array"); downres: ""

    @property
    def ok(self) -> bool:
        return self.verification.ok and (self.validation is None or self.validation.ok)

    @property
    def chunks_written(self) -> int:
        return sum(r.chunks_written for r in self.results)

    @property
    def voxels(self) -> int:
        return sum(r.voxels for r in self.results)


def plan_scale(
    export_dir: str | Path,
    dest_url: str,
    scale: int,
    *,
    supervoxels: bool = False,
    z_compress: int = 0,
    rule: str = "tensorstore",
    writer: str = "transcode",
    only_missing: bool = False,
) -> Manifest:
    """DVID shards when the export has `s<scale>/` (written by `writer`), otherwise downres from the scale below."""
    if scale in dvid_scales(export_dir):
        return plan_dvid_scale(
            export_dir, dest_url, scale, supervoxels=supervoxels, z_compress=z_compress if scale == 0 else 0, writer=writer, only_missing=only_missing
        )
    return plan_downres_scale(dest_url, scale, rule=rule, only_missing=only_missing)


def build_scale(
    export_dir: str | Path,
    dest_url: str,
    scale: int,
    manifest_url: str,
    *,
    supervoxels: bool = False,
    z_compress: int = 0,
    rule: str = "tensorstore",
    writer: str = "transcode",
    only_missing: bool = True,
    run_tasks: TaskRunner | None = None,
    report: Callable[[str], Any] = print,
) -> ScaleBuild:
    """Plan, run and verify one scale. Shards already written are skipped (`only_missing`), so a
    rerun after a failure finishes the job; verification always covers the whole scale. The manifest
    is saved at `manifest_url` (a path, `file://` or `gs://`: where the workers read it). A DVID scale
    is written by `writer` ("transcode", the default, or "array"; z_compress always takes the array
    path), a downres scale by its own path. Progress
    lines (shards done of planned, voxels/s, ETA) go to `report`."""
    started = time.perf_counter()
    options = {"supervoxels": supervoxels, "z_compress": z_compress, "rule": rule, "writer": writer}
    manifest = plan_scale(export_dir, dest_url, scale, only_missing=only_missing, **options)
    url = manifest.save(manifest_url)
    progress = Progress(f"scale {scale}", report, unit="voxels", step="shards", steps_total=len(manifest.shards))
    done: set[str] = set()

    def on_shard(line: dict) -> None:
        if line["shard"] not in done:  # a retried task reports its shards again
            done.add(line["shard"])
            progress.advance(line.get("voxels", line.get("input_voxels", 0)))

    results = (run_tasks or LocalTaskRunner())(url, manifest, on_shard)
    figures = progress.finish()
    verification, validation, whole = verify_whole_scale(export_dir, dest_url, scale, **options)
    return ScaleBuild(scale, whole.kind, url, len(whole.shards), results, verification, validation, time.perf_counter() - started, figures, manifest.writer if manifest.kind == "dvid" else "")


def verify_whole_scale(
    export_dir: str | Path, dest_url: str, scale: int, **options: Any
) -> tuple[ScaleVerification, DvidValidation | None, Manifest]:
    """Every shard the whole scale needs (not only the ones just written), sampled chunks, and for a
    DVID scale the export's own shard mapping."""
    whole = plan_scale(export_dir, dest_url, scale, **options)
    validation = validate_dvid(export_dir, scales_of(read_info(dest_url))[scale]) if whole.kind == "dvid" else None
    return verify_scale(whole), validation, whole


@dataclass(frozen=True)
class ExportListing:
    """What a DVID export folder holds now, for noticing new and finished exports."""

    name: str
    path: Path
    scales: list[int]
    has_spec: bool
    finished: bool  # DVID writes export.log once the export is done
    digest: str  # of every file's name, size and modification time

    def complete(self, previous_digest: str | None) -> bool:
        """Ready to convert: shards and a spec, and either export.log or the same listing as last look."""
        return bool(self.scales) and self.has_spec and (self.finished or self.digest == previous_digest)


def list_exports(root: str | Path) -> list[ExportListing]:
    """Every folder directly under `root` that holds DVID shards (`s<k>/*.arrow`)."""
    root = Path(root)
    listings = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []:
        scales = dvid_scales(folder)
        if not scales:
            continue
        digest = hashlib.sha256()
        for file in sorted(p for p in folder.rglob("*") if p.is_file()):
            stat = file.stat()
            digest.update(f"{file.relative_to(folder)}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
        listings.append(ExportListing(folder.name, folder, scales, any(folder.glob("*.json")), (folder / "export.log").is_file(), digest.hexdigest()[:16]))
    return listings
