"""Neuroglancer volumes from DVID exports, one partition per export. Thin: `volumes.build` works.

`ng_info` writes the whole multiscale info first; then one asset per scale, each behind the
blocking `scale_complete` check of the scale below, so no scale is built on an unverified one.
A scale comes from the export's own `s<k>/` shards when DVID exported it, otherwise by 2×2×2
mode from the scale below. There are `MAX_SCALES` scale assets (the male CNS spec has 12); a
volume whose spec has fewer scales materializes the rest as "not in this volume's spec".
"""

import dagster as dg
from pydantic import Field

from connectome_assets.defs.automation import BEHIND_VERIFIED_UPSTREAM
from connectome_assets.defs.connectome.assets import failure
from connectome_assets.defs.resources import VolumesResource
from connectome_assets.defs.volumes.partitions import dvid_exports_partitions
from connectome_assets.defs.volumes.tasks import VolumeTasksResource
from connectome_assets.volumes import WRITERS
from connectome_assets.volumes.build import build_scale, prepare_volume
from connectome_assets.volumes.downres import RULES
from connectome_assets.volumes.plan import PlanError
from connectome_assets.volumes.precomputed import VolumeSpecError, neuroglancer_link, read_info
from connectome_assets.volumes.shard_reader import ShardFormatError
from connectome_assets.volumes.worker import TasksFailed

MAX_SCALES = 12
_ACTIONABLE = (PlanError, VolumeSpecError, ShardFormatError, TasksFailed, ValueError)


class VolumeConfig(dg.Config):
    supervoxels: bool = Field(default=False, description="Keep supervoxel ids instead of mapping blocks to agglomerated labels.")
    z_compress: int = Field(default=0, description="Keep every (N+1)th z slice of s0 (Z-doubled exports).")
    rule: str = Field(default="tensorstore", description=f"Mode tie rule for downres scales: one of {RULES}.")
    only_missing: bool = Field(default=True, description="Skip output shards already written (a rerun finishes the job).")
    writer: str = Field(
        default="transcode",
        description=f"Writer of DVID-exported scales, one of {WRITERS}: transcode blocks straight to compressed_segmentation chunks,"
        " or write decoded arrays through tensorstore (z_compress always does).",
    )


def volume_asset(name: str, deps: list, description: str):
    return dg.asset(
        name=name,
        partitions_def=dvid_exports_partitions,
        deps=deps,
        group_name="volumes",
        kinds={"neuroglancer", "tensorstore"},
        description=description,
        automation_condition=BEHIND_VERIFIED_UPSTREAM,
    )


@volume_asset("ng_info", [], "The volume's multiscale neuroglancer `info`, written whole from the export's spec before any scale.")
def ng_info(context: dg.AssetExecutionContext, config: VolumeConfig, volumes: VolumesResource) -> dg.MaterializeResult:
    try:
        url, info = prepare_volume(volumes.export_dir(context.partition_key), volumes.destination(context.partition_key), z_compress=config.z_compress)
    except _ACTIONABLE as exc:
        raise failure(exc) from exc
    return dg.MaterializeResult(
        metadata={
            "destination": url,
            "scales": dg.MetadataValue.json([{"key": s["key"], "size": s["size"]} for s in info["scales"]]),
            "neuroglancer": dg.MetadataValue.url(neuroglancer_link(url)),
        }
    )


TASK_TABLE = dg.TableSchema(
    columns=[
        dg.TableColumn("task", "int"),
        dg.TableColumn("shards", "int"),
        dg.TableColumn("chunks_written", "int"),
        dg.TableColumn("voxels", "int"),
        dg.TableColumn("seconds", "float"),
    ]
)


def build_scale_asset(scale: int, upstream: dg.AssetsDefinition) -> dg.AssetsDefinition:
    @volume_asset(
        f"ng_scale_{scale}",
        [upstream],
        f"Scale {scale} of the neuroglancer volume: the export's s{scale}/ DVID shards when it has them, else 2×2×2 mode of scale {scale - 1};"
        " one tensorstore transaction per output shard (DVID blocks transcoded to compressed_segmentation chunks by default);"
        " every shard and a sample of chunks verified.",
    )
    def _scale(context: dg.AssetExecutionContext, config: VolumeConfig, volumes: VolumesResource, volume_tasks: VolumeTasksResource) -> dg.MaterializeResult:
        name = context.partition_key
        dest = volumes.destination(name) + "/"
        try:
            info = read_info(dest)
            if scale >= len(info["scales"]):
                return dg.MaterializeResult(metadata={"status": "not in this volume's spec", "spec_scales": len(info["scales"])})
            built = build_scale(
                volumes.export_dir(name),
                dest,
                scale,
                volumes.manifest_url(name, scale),
                supervoxels=config.supervoxels,
                z_compress=config.z_compress,
                rule=config.rule,
                writer=config.writer,
                only_missing=config.only_missing,
                run_tasks=volume_tasks.task_runner(context, volumes.exports),
                report=context.log.info,
            )
        except _ACTIONABLE as exc:
            raise failure(exc) from exc
        return dg.MaterializeResult(
            metadata={
                "status": "built",
                "source": built.kind,
                **({"writer": built.writer} if built.writer else {}),  # DVID scales: transcode or array
                "key": info["scales"][scale]["key"],
                "runner": volume_tasks.runner,
                "output_shards": dg.MetadataValue.int(built.planned_shards),
                "shards_written_now": dg.MetadataValue.int(sum(r.shards for r in built.results)),
                "chunks_written_now": dg.MetadataValue.int(built.chunks_written),
                "voxels_per_second": dg.MetadataValue.float(float(built.progress["voxels_per_second"] or 0.0)),
                "tasks": dg.MetadataValue.table(
                    [
                        dg.TableRecord({"task": r.task, "shards": r.shards, "chunks_written": r.chunks_written, "voxels": r.voxels, "seconds": round(r.seconds, 2)})
                        for r in built.results
                    ],
                    schema=TASK_TABLE,
                ),
                "manifest": dg.MetadataValue.url(built.manifest_url),
                "verified": built.ok,
                "neuroglancer": dg.MetadataValue.url(neuroglancer_link(dest)),
                "seconds": dg.MetadataValue.float(round(built.seconds, 3)),
            }
        )

    return _scale


def build_scale_assets(count: int = MAX_SCALES) -> list[dg.AssetsDefinition]:
    assets: list[dg.AssetsDefinition] = []
    for scale in range(count):
        assets.append(build_scale_asset(scale, assets[-1] if assets else ng_info))
    return assets


scale_assets = build_scale_assets()
