"""Where steps run: here, one process per step; on Kubernetes, one pod per step sized by its stage.

`CONNECTOME_EXECUTOR=k8s` (the chart sets it) selects dagster-k8s' `k8s_job_executor`, configured
with a `dagster-k8s/config` (container resources) for every step: the memory tier of its stage,
the asset group (`CONNECTOME_K8S_STAGE_MEMORY`), and the CPU of that tier
(`CONNECTOME_K8S_TIER_CPU`). A check runs in its asset's stage. Steps are keyed by op name, so the
configuration applies to job runs, backfills and automation runs alike (a tag on a job would not
reach the asset-selection runs of backfills and automation).
"""

from collections.abc import Iterable, Mapping
from typing import Any

import dagster as dg

from connectome_assets.settings import Settings


def step_resources(memory_gib: int, cpu: str) -> dict[str, Any]:
    """The `dagster-k8s/config` of one step: its container's requests and limits (memory request = limit)."""
    memory = f"{memory_gib}Gi"
    return {"container_config": {"resources": {"requests": {"cpu": cpu, "memory": memory}, "limits": {"memory": memory}}}}


def per_step_config(
    assets: Iterable[dg.AssetsDefinition], checks: Iterable[dg.AssetChecksDefinition], stage_memory_gib: Mapping[str, int], tier_cpu: Mapping[int, str]
) -> dict[str, dict[str, Any]]:
    """Op name -> its step's `dagster-k8s/config`, for every asset and check op."""
    stage_of_asset: dict[dg.AssetKey, str] = {}
    config: dict[str, dict[str, Any]] = {}
    for assets_def in assets:
        if not assets_def.is_executable:
            continue
        groups = {spec.group_name for spec in assets_def.specs}
        if len(groups) != 1 or not groups <= set(stage_memory_gib):
            raise ValueError(f"{assets_def.node_def.name}: assets of one op must share a stage among {', '.join(stage_memory_gib)}, not {sorted(groups)}")
        (stage,) = groups
        stage_of_asset.update(dict.fromkeys(assets_def.keys, stage))
        config[assets_def.node_def.name] = step_resources(stage_memory_gib[stage], tier_cpu[stage_memory_gib[stage]])
    for checks_def in checks:
        (stage,) = {stage_of_asset[spec.asset_key] for spec in checks_def.check_specs}
        config[checks_def.node_def.name] = step_resources(stage_memory_gib[stage], tier_cpu[stage_memory_gib[stage]])
    return config


def executor_for(settings: Settings, definitions: dg.Definitions) -> dg.ExecutorDefinition | None:
    """The k8s_job_executor with per-step resources when the settings ask for it; None: Dagster's default."""
    if settings.executor != "k8s":
        return None
    from dagster_k8s import k8s_job_executor  # the kubernetes client loads only where it is used

    assets = [a for a in definitions.assets or [] if isinstance(a, dg.AssetsDefinition)]
    steps = per_step_config(assets, definitions.asset_checks or [], settings.stage_memory_gib, settings.volume_tasks.tier_cpu)
    return k8s_job_executor.configured({"per_step_k8s_config": steps}, name="k8s_per_stage")
