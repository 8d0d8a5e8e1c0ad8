"""Blocking `scale_complete` checks: the next scale never builds on an incomplete one."""

import dagster as dg

from connectome_assets.defs.automation import WITH_ITS_ASSET
from connectome_assets.defs.resources import VolumesResource
from connectome_assets.defs.volumes.assets import scale_assets
from connectome_assets.defs.volumes.partitions import dvid_exports_partitions
from connectome_assets.volumes.build import verify_whole_scale
from connectome_assets.volumes.plan import Manifest, PlanError
from connectome_assets.volumes.precomputed import VolumeSpecError, read_info


def build_scale_check(asset: dg.AssetsDefinition, scale: int) -> dg.AssetChecksDefinition:
    @dg.asset_check(
        asset=asset,
        name="scale_complete",
        blocking=True,
        partitions_def=dvid_exports_partitions,
        automation_condition=WITH_ITS_ASSET,
        description="Every output shard the scale needs exists (one per DVID source shard, or per parent region for downres),"
        " and sampled chunks read back equal to the decoded source or to a reference mode of the parent.",
    )
    def _check(context: dg.AssetCheckExecutionContext, volumes: VolumesResource) -> dg.AssetCheckResult:
        name = context.partition_key
        dest = volumes.destination(name) + "/"
        try:
            if scale >= len(read_info(dest)["scales"]):
                return dg.AssetCheckResult(passed=True, description="not in this volume's spec")
            built = Manifest.load(volumes.manifest_url(name, scale))  # the options the scale was built with
            verification, validation, _ = verify_whole_scale(
                volumes.export_dir(name), dest, scale, supervoxels=built.supervoxels, z_compress=built.z_compress, rule=built.rule
            )
        except (PlanError, VolumeSpecError, ValueError) as exc:
            return dg.AssetCheckResult(passed=False, severity=dg.AssetCheckSeverity.ERROR, description=str(exc))
        problems = verification.problems + (validation.problems if validation else [])
        return dg.AssetCheckResult(
            passed=not problems,
            severity=dg.AssetCheckSeverity.ERROR,
            description="; ".join(problems[:5]) or None,
            metadata={
                "expected_shards": dg.MetadataValue.int(verification.expected_shards),
                "present_shards": dg.MetadataValue.int(verification.present_shards),
                "chunks_compared": dg.MetadataValue.int(verification.chunks_checked),
                "problems": dg.MetadataValue.int(len(problems)),
            },
        )

    return _check


scale_checks = [build_scale_check(asset, scale) for scale, asset in enumerate(scale_assets)]
