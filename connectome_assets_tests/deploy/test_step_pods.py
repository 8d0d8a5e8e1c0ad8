"""Per-stage step pods under `CONNECTOME_EXECUTOR=k8s`: the executor's `dagster-k8s/config` per step,
and the step Jobs dagster-k8s builds from it, validated strictly against the Kubernetes schemas."""

from __future__ import annotations

import dagster as dg
import kubernetes_validate
import pytest
from dagster_k8s.job import DagsterK8sJobConfig, UserDefinedDagsterK8sConfig, construct_dagster_k8s_job
from kubernetes.client import ApiClient

from connectome_assets.definitions import build_definitions
from connectome_assets.defs.executor import per_step_config
from connectome_assets.settings import load_settings

KUBE_VERSION = "1.31.0"


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory):
    home = tmp_path_factory.mktemp("step-pods")
    return load_settings({"CONNECTOME_HOME": str(home), "CONNECTOME_EXECUTOR": "k8s", "CONNECTOME_K8S_STAGE_MEMORY": '{"exports": 24}'})


@pytest.fixture(scope="module")
def steps(settings) -> dict:
    defs = build_definitions(settings)
    assets = [a for a in defs.assets if isinstance(a, dg.AssetsDefinition)]
    return per_step_config(assets, defs.asset_checks, settings.stage_memory_gib, settings.volume_tasks.tier_cpu)


def memory_of(config: dict) -> str:
    resources = config["container_config"]["resources"]
    assert resources["requests"]["memory"] == resources["limits"]["memory"]  # never overcommitted
    return resources["requests"]["memory"]


def test_every_job_runs_its_steps_in_pods_sized_by_stage(settings, steps: dict) -> None:
    defs = build_definitions(settings)
    for job in ("dataset_import", "volume_export", "purge_dataset"):
        assert defs.resolve_job_def(job).executor_def.name == "k8s_per_stage"
    expected = {
        "neurons": "16Gi",
        "synapses": "16Gi",
        "synapses_endpoint_integrity": "16Gi",  # a check runs in its asset's stage
        "bottleneck_neurons": "16Gi",
        "feature_exports": "24Gi",  # from CONNECTOME_K8S_STAGE_MEMORY
        "feature_exports_export_row_counts": "24Gi",
        "registry_entries": "4Gi",
        "ng_scale_0": "4Gi",  # the heavy volume work is in the worker pods, sized by task
        "ng_scale_0_scale_complete": "4Gi",
    }
    assert {step: memory_of(steps[step]) for step in expected} == expected
    assert steps["feature_exports"]["container_config"]["resources"]["requests"]["cpu"] == settings.volume_tasks.tier_cpu[24]
    # Every asset and check op of the code location has its pod size.
    assert len(steps) == sum(1 for a in defs.assets if isinstance(a, dg.AssetsDefinition)) + len(defs.asset_checks)


@pytest.mark.parametrize("step", ["synapses", "feature_exports_export_row_counts", "ng_scale_3"])
def test_the_step_jobs_dagster_k8s_builds_are_valid_kubernetes(steps: dict, step: str) -> None:
    job = construct_dagster_k8s_job(
        DagsterK8sJobConfig(job_image="europe-docker.pkg.dev/p/images/connectome-assets:1", dagster_home="/opt/dagster/dagster_home", instance_config_map="ca-instance"),
        ["dagster", "api", "execute_step"],
        f"dagster-step-{step.replace('_', '-')}",
        user_defined_k8s_config=UserDefinedDagsterK8sConfig.from_dict(steps[step]),
    )
    manifest = ApiClient().sanitize_for_serialization(job)
    manifest.update(apiVersion="batch/v1", kind="Job")
    kubernetes_validate.validate(manifest, KUBE_VERSION, strict=True)
    (container,) = manifest["spec"]["template"]["spec"]["containers"]
    assert container["resources"] == steps[step]["container_config"]["resources"]


def test_the_default_executor_stays_local(tmp_path) -> None:
    defs = build_definitions(load_settings({"CONNECTOME_HOME": str(tmp_path)}))
    assert defs.resolve_job_def("dataset_import").executor_def.name == "multi_or_in_process_executor"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ('{"connectome": 12}', "not a tier: connectome=12"),
        ('{"ingest": 16}', "unknown ingest"),
        ("16", "must be a JSON object of stage to memory tier"),
    ],
)
def test_bad_stage_memory_is_one_sentence_naming_the_variable(value: str, message: str) -> None:
    with pytest.raises(ValueError, match="CONNECTOME_K8S_STAGE_MEMORY") as error:
        load_settings({"CONNECTOME_K8S_STAGE_MEMORY": value})
    assert message in str(error.value)


def test_an_unknown_executor_or_automation_switch_is_refused() -> None:
    with pytest.raises(ValueError, match="CONNECTOME_EXECUTOR is 'celery'; it must be one of multiprocess, k8s"):
        load_settings({"CONNECTOME_EXECUTOR": "celery"})
    with pytest.raises(ValueError, match="CONNECTOME_AUTOMATION is 'yes'; it must be one of on, off"):
        load_settings({"CONNECTOME_AUTOMATION": "yes"})

