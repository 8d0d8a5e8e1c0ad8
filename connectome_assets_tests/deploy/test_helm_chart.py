"""The Helm chart in helm/connectome-assets, rendered offline (helm-python-sdk, the Helm v4 SDK)
and every manifest validated strictly against the Kubernetes schemas (kubernetes-validate).

No helm binary, no cluster, no network."""

from __future__ import annotations

import json
from pathlib import Path

import helm_python as helm
import jsonschema
import kubernetes_validate
import pytest
import yaml

from connectome_assets import settings as settings_module
from connectome_assets.settings import load_settings
from connectome_assets.volumes.kubernetes import indexed_jobs
from connectome_assets.volumes.plan import TIERS_GIB, Manifest, ShardJob, Task

CHART = Path(__file__).resolve().parents[2] / "helm" / "connectome-assets"
KUBE_VERSION = "1.31.0"
RELEASE, NAMESPACE = "ca", "connectome"
CRD_KINDS = {("clickhouse.altinity.com/v1", "ClickHouseInstallation")}

PRODUCTION_VALUES = """
image:
  repository: europe-docker.pkg.dev/connectome-prod/images/connectome-assets
  tag: "2026.11.21"
  pullPolicy: Always
webserver: {replicas: 2, port: 3000, service: {type: ClusterIP, port: 80}}
userCode: {replicas: 2, port: 4000, locationName: connectome_assets, module: connectome_assets.definitions}
registry:
  enabled: true
  replicas: 2
  port: 8765
  publicUrl: https://registry.connectome.example.org
  roots: ["gs://connectome-public/features"]
  service: {type: ClusterIP, port: 8765}
dagster:
  home: /opt/dagster/dagster_home
  maxConcurrentRuns: 8
  partitionRunLimit: 1
  runLauncher: {jobNamespace: connectome-runs, failPodOnRunFailure: true}
postgresql: {host: pg.connectome.internal, port: 5432, username: dagster, database: dagster, params: {sslmode: require}}
connectome:
  clickhouse: {scheme: http, host: "", port: 8123, username: connectome, database: connectome}
  objectStore: gs://connectome-prod/objects
  exportsClaim: dvid-exports
  extraEnv: {CONNECTOME_REGISTRY_GCS_ENDPOINT: https://storage.googleapis.com}
secrets:
  postgresql: {existingSecret: prod-postgresql, passwordKey: password}
  metadata: {existingSecret: prod-postgresql, urlKey: metadata-url}
  clickhouse: {existingSecret: prod-clickhouse, passwordKey: password, urlKey: ""}
  registry: {existingSecret: prod-registry, secretKey: signing-secret, tokenKey: write-token}
  gcsKey: {existingSecret: prod-gcs-key, key: sa.json, mountPath: /var/secrets/gcs}
volumes:
  runner: kubernetes
  parallelism: 64
  retriesPerTask: 2
  ttlSecondsAfterFinished: 3600
  serviceAccount: volume-worker
  tierCpu: {"4": "1", "8": "2", "16": "4", "24": "6", "32": "8"}
clickhouse: {install: true, shards: 2, replicas: 2, storage: 500Gi, storageClassName: premium-rwo}
"""


@pytest.fixture(scope="module")
def chart() -> helm.Chart:
    return helm.Chart.load(CHART)


def render(chart: helm.Chart, values: dict | None = None) -> list[dict]:
    manifests = chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    return [doc for text in manifests.values() for doc in yaml.safe_load_all(text) if doc]


@pytest.fixture(scope="module")
def default_docs(chart) -> list[dict]:
    return render(chart)


@pytest.fixture(scope="module")
def production_values() -> dict:
    return helm.values_from_yaml(PRODUCTION_VALUES)


@pytest.fixture(scope="module")
def production_docs(chart, production_values) -> list[dict]:
    return render(chart, production_values)


def one(docs: list[dict], kind: str, name: str) -> dict:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name} in {[(d['kind'], d['metadata']['name']) for d in docs]}"
    return found[0]


def container(deployment: dict) -> dict:
    (c,) = deployment["spec"]["template"]["spec"]["containers"]
    return c


def env_of(c: dict) -> dict[str, dict]:
    return {e["name"]: e for e in c.get("env", [])}


def test_chart_metadata_and_lint(chart):
    assert chart.metadata["apiVersion"] == "v2"
    assert chart.name == "connectome-assets"
    assert chart.schema is not None and chart.schema["$schema"].startswith("http://json-schema.org/draft-07")
    for values in (None, helm.values_from_yaml(PRODUCTION_VALUES)):
        report = helm.lint(CHART, values, strict=True, namespace=NAMESPACE, kube_version=f"v{KUBE_VERSION}")
        assert report["errors"] == []
        assert [m for m in report["messages"] if m["severity"] >= 2] == []


@pytest.mark.parametrize("which", ["default", "production"])
def test_every_manifest_validates_strictly(which, default_docs, production_docs):
    docs = default_docs if which == "default" else production_docs
    kinds = set()
    for doc in docs:
        if (doc["apiVersion"], doc["kind"]) in CRD_KINDS:
            continue  # not in the Kubernetes schemas: its shape is asserted below
        assert kubernetes_validate.validate(doc, KUBE_VERSION, strict=True) == "1.31"
        kinds.add(doc["kind"])
        labels = doc["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == "connectome-assets"
        assert labels["app.kubernetes.io/instance"] == RELEASE
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
    assert kinds == {"ConfigMap", "Deployment", "Service", "ServiceAccount", "Role", "RoleBinding"}


def test_strict_validation_catches_a_broken_manifest(default_docs):
    doc = json.loads(json.dumps(one(default_docs, "Service", f"{RELEASE}-connectome-assets-webserver")))
    doc["spec"]["portz"] = doc["spec"].pop("ports")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)


def test_components_and_commands(default_docs):
    prefix = f"{RELEASE}-connectome-assets"
    web = container(one(default_docs, "Deployment", f"{prefix}-webserver"))
    assert web["command"] == ["dagster-webserver", "-h", "0.0.0.0", "-p", "3000", "-w", "/opt/dagster/workspace.yaml"]
    daemon = container(one(default_docs, "Deployment", f"{prefix}-daemon"))
    assert daemon["command"][:2] == ["dagster-daemon", "run"]
    user_code = container(one(default_docs, "Deployment", f"{prefix}-user-code"))
    assert user_code["command"] == ["dagster", "api", "grpc", "--host", "0.0.0.0", "--port", "4000",
                                    "--module-name", "connectome_assets.definitions", "--location-name", "connectome_assets"]
    assert env_of(user_code)["DAGSTER_CURRENT_IMAGE"]["value"] == "ghcr.io/connectome/connectome-assets:0.1.0"
    for name in ("webserver", "daemon", "user-code", "registry"):
        deployment = one(default_docs, "Deployment", f"{prefix}-{name}")
        spec = deployment["spec"]["template"]["spec"]
        assert spec["serviceAccountName"] == prefix
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert deployment["spec"]["replicas"] == 1
    for name, port in (("webserver", 80), ("user-code", 4000), ("registry", 8765)):
        assert one(default_docs, "Service", f"{prefix}-{name}")["spec"]["ports"][0]["port"] == port


def test_registry_serves_with_healthz_probe(default_docs):
    registry = container(one(default_docs, "Deployment", f"{RELEASE}-connectome-assets-registry"))
    assert registry["command"][:3] == ["connectome", "registry", "serve"]
    assert registry["command"][3:7] == ["--host", "0.0.0.0", "--port", "8765"]
    assert registry["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert registry["ports"][0]["containerPort"] == 8765


def instance_yaml(docs: list[dict]) -> dict:
    cm = one(docs, "ConfigMap", f"{RELEASE}-connectome-assets-instance")
    return yaml.safe_load(cm["data"]["dagster.yaml"])


@pytest.mark.parametrize("which", ["default", "production"])
def test_dagster_instance(which, default_docs, production_docs):
    docs = default_docs if which == "default" else production_docs
    instance = instance_yaml(docs)
    for storage in ("run_storage", "event_log_storage", "schedule_storage"):
        assert instance[storage]["module"].startswith("dagster_postgres.")
        db = instance[storage]["config"]["postgres_db"]
        assert db["scheme"] == "postgresql+psycopg2"
        assert db["password"] == {"env": "DAGSTER_PG_PASSWORD"}
    launcher = instance["run_launcher"]
    assert (launcher["module"], launcher["class"]) == ("dagster_k8s", "K8sRunLauncher")
    assert launcher["config"]["service_account_name"] == f"{RELEASE}-connectome-assets"
    assert launcher["config"]["instance_config_map"] == f"{RELEASE}-connectome-assets-instance"
    assert f"{RELEASE}-connectome-assets-env" in launcher["config"]["env_config_maps"]
    run_env = {e["name"]: e for e in launcher["config"]["run_k8s_config"]["container_config"]["env"]}
    assert "secretKeyRef" in run_env["DAGSTER_PG_PASSWORD"]["valueFrom"]
    assert "run_coordinator" not in instance  # Dagster's default, the queued run coordinator, with the limits below
    assert instance["concurrency"]["runs"]["tag_concurrency_limits"] == [
        {"key": "dagster/partition", "value": {"applyLimitPerUniqueValue": True}, "limit": 1}
    ]
    assert instance["telemetry"] == {"enabled": False}
    if which == "production":
        assert launcher["config"]["job_namespace"] == "connectome-runs"
        assert instance["run_storage"]["config"]["postgres_db"]["hostname"] == "pg.connectome.internal"
        assert instance["run_storage"]["config"]["postgres_db"]["params"] == {"sslmode": "require"}
        assert launcher["config"]["volumes"][0]["secret"]["secretName"] == "prod-gcs-key"
        assert run_env["CONNECTOME_REGISTRY_GCS_KEY"]["value"] == "/var/secrets/gcs/sa.json"
    else:
        assert launcher["config"]["job_namespace"] == NAMESPACE


def test_workspace_points_at_user_code_service(default_docs):
    workspace = yaml.safe_load(one(default_docs, "ConfigMap", f"{RELEASE}-connectome-assets-workspace")["data"]["workspace.yaml"])
    service = one(default_docs, "Service", f"{RELEASE}-connectome-assets-user-code")
    assert workspace == {"load_from": [{"grpc_server": {
        "host": service["metadata"]["name"], "port": service["spec"]["ports"][0]["port"], "location_name": "connectome_assets"}}]}
    # the webserver and daemon mount it where their commands read it
    for name in ("webserver", "daemon"):
        mounts = container(one(default_docs, "Deployment", f"{RELEASE}-connectome-assets-{name}"))["volumeMounts"]
        assert {"name": "dagster-workspace", "mountPath": "/opt/dagster/workspace.yaml", "subPath": "workspace.yaml"} in mounts


@pytest.mark.parametrize("which", ["default", "production"])
def test_only_secret_references(which, default_docs, production_docs, production_values):
    docs = default_docs if which == "default" else production_docs
    assert not [d for d in docs if d["kind"] == "Secret"]
    env_cm = one(docs, "ConfigMap", f"{RELEASE}-connectome-assets-env")["data"]
    # the only secret-sounding entries name the GCS key's Secret object and key, never a value
    names_of_secret = {"CONNECTOME_K8S_GCS_KEY_SECRET", "CONNECTOME_K8S_GCS_KEY_NAME"}
    assert not [k for k in env_cm if any(w in k for w in ("PASSWORD", "TOKEN", "SECRET", "KEY")) and k not in names_of_secret]
    gcs = (production_values if which == "production" else helm.values_from_yaml(CHART.joinpath("values.yaml").read_text()))["secrets"]["gcsKey"]
    assert (env_cm["CONNECTOME_K8S_GCS_KEY_SECRET"], env_cm["CONNECTOME_K8S_GCS_KEY_NAME"]) == (gcs["existingSecret"], gcs["key"])
    for deployment in (d for d in docs if d["kind"] == "Deployment"):
        env = env_of(container(deployment))
        for name in ("DAGSTER_PG_PASSWORD", "CONNECTOME_REGISTRY_SECRET", "CONNECTOME_REGISTRY_TOKEN"):
            assert set(env[name]) == {"name", "valueFrom"}, (deployment["metadata"]["name"], name)
            assert "secretKeyRef" in env[name]["valueFrom"]
    if which == "production":
        user_code = one(docs, "Deployment", f"{RELEASE}-connectome-assets-user-code")
        env = env_of(container(user_code))
        assert env["DAGSTER_PG_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "prod-postgresql", "key": "password"}
        assert env["CONNECTOME_METADATA_URL"]["valueFrom"]["secretKeyRef"] == {"name": "prod-postgresql", "key": "metadata-url"}
        assert env["CONNECTOME_REGISTRY_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "prod-registry", "key": "write-token"}
        assert env["CONNECTOME_CLICKHOUSE_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "prod-clickhouse", "key": "password"}
        # the Altinity operator's Service of the installation the chart renders
        assert env["CONNECTOME_CLICKHOUSE_URL"]["value"] == (
            "http://connectome:$(CONNECTOME_CLICKHOUSE_PASSWORD)@clickhouse-ca-connectome-assets-clickhouse:8123")
        assert env["CONNECTOME_REGISTRY_GCS_KEY"]["value"] == "/var/secrets/gcs/sa.json"
        mounts = {m["name"]: m for m in container(user_code)["volumeMounts"]}
        assert mounts["gcs-key"] == {"name": "gcs-key", "mountPath": "/var/secrets/gcs", "readOnly": True}
        volumes = {v["name"]: v for v in user_code["spec"]["template"]["spec"]["volumes"]}
        assert volumes["gcs-key"]["secret"]["secretName"] == "prod-gcs-key"
        assert env_cm["CONNECTOME_OBJECT_STORE"] == "gs://connectome-prod/objects"
        assert env_cm["CONNECTOME_REGISTRY_URL"] == "http://ca-connectome-assets-registry:8765"
    else:
        assert "CONNECTOME_REGISTRY_GCS_KEY" not in env_of(container(one(docs, "Deployment", f"{RELEASE}-connectome-assets-user-code")))


def test_rbac_allows_exactly_what_the_launcher_and_the_volume_runner_call(production_docs):
    role = one(production_docs, "Role", f"{RELEASE}-connectome-assets")
    assert role["metadata"]["namespace"] == "connectome-runs"
    granted = {(group, resource, verb) for r in role["rules"] for group in r["apiGroups"] for resource in r["resources"] for verb in r["verbs"]}
    # K8sRunLauncher / DagsterKubernetesClient: create_namespaced_job, read_namespaced_job_status,
    # list_namespaced_job, delete_namespaced_job, list/read/delete pods, read_namespaced_pod_log,
    # list_namespaced_event; the volume runner: create/read-status/delete Jobs, list pods, follow logs
    needed = {("batch", "jobs", v) for v in ("create", "get", "list", "watch", "delete")} | {("batch", "jobs/status", "get")}
    needed |= {("", "pods", v) for v in ("get", "list", "watch", "delete")} | {("", "pods/log", "get"), ("", "events", "list")}
    assert granted == needed
    binding = one(production_docs, "RoleBinding", f"{RELEASE}-connectome-assets")
    assert binding["metadata"]["namespace"] == "connectome-runs"
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role["metadata"]["name"]}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": f"{RELEASE}-connectome-assets", "namespace": NAMESPACE}]


def test_replicas_and_image_from_values(production_docs):
    for name in ("webserver", "user-code", "registry"):
        deployment = one(production_docs, "Deployment", f"{RELEASE}-connectome-assets-{name}")
        assert deployment["spec"]["replicas"] == 2
        c = container(deployment)
        assert c["image"] == "europe-docker.pkg.dev/connectome-prod/images/connectome-assets:2026.11.21"
        assert c["imagePullPolicy"] == "Always"
    assert one(production_docs, "Deployment", f"{RELEASE}-connectome-assets-daemon")["spec"]["replicas"] == 1


@pytest.mark.parametrize("which", ["default", "production"])
def test_env_config_map_configures_the_code(which, default_docs, production_docs):
    """Every variable the chart sets is one settings.py reads, and the settings come out as the values say."""
    docs = default_docs if which == "default" else production_docs
    env = one(docs, "ConfigMap", f"{RELEASE}-connectome-assets-env")["data"]
    settings_source = Path(settings_module.__file__).read_text()
    unread = [name for name in env if name.startswith("CONNECTOME_") and f'"{name}"' not in settings_source]
    assert unread == []
    settings = load_settings(env)
    tasks = settings.volume_tasks
    assert tasks.runner == ("kubernetes" if which == "production" else "local")
    assert tasks.image == container(one(docs, "Deployment", f"{RELEASE}-connectome-assets-user-code"))["image"]
    launcher = instance_yaml(docs)["run_launcher"]["config"]
    assert tasks.namespace == launcher["job_namespace"]
    assert sorted(tasks.tier_cpu) == list(TIERS_GIB)
    # Every step of a run in its own pod, sized by its stage (defs/executor.py).
    assert settings.executor == "k8s" and settings.automation
    assert settings.stage_memory_gib == {"connectome": 16, "graph": 16, "exports": 8, "registry": 4, "volumes": 4}
    if which == "production":
        assert (tasks.parallelism, tasks.retries_per_task, tasks.ttl_seconds, tasks.service_account) == (64, 2, 3600, "volume-worker")
        assert tasks.tier_cpu == {4: "1", 8: "2", 16: "4", 24: "6", 32: "8"}
        assert (tasks.exports_claim, tasks.gcs_key_secret, tasks.gcs_key_name) == ("dvid-exports", "prod-gcs-key", "sa.json")
        assert settings.object_store == "gs://connectome-prod/objects"
        # the claim is where the planner (run pods) and the sensor (user code) read the exports
        exports_mount = {"name": "exports", "mountPath": "/opt/dagster/data/exports", "readOnly": True}
        assert exports_mount in launcher["volume_mounts"]
        assert exports_mount in container(one(docs, "Deployment", f"{RELEASE}-connectome-assets-user-code"))["volumeMounts"]
        # and the worker pods mount the same claim at the same path
        manifest = Manifest("dvid", "gs://b/v/", 0, "8x8x8", [Task(16, [ShardJob("0.shard", 0, 1, 1, source="/x.arrow")])])
        (job,) = indexed_jobs(manifest, "gs://b/m.json", "v", tasks, namespace=tasks.namespace, exports_path=str(settings.exports))
        assert kubernetes_validate.validate(job, KUBE_VERSION, strict=True) == "1.31"
        assert exports_mount in job["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]
        assert job["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"] == {"cpu": "4", "memory": "16Gi"}
    else:
        assert (tasks.exports_claim, tasks.gcs_key_secret) == ("", "")


def _crd_object(properties: dict, required: tuple[str, ...] = ()) -> dict:
    return {"type": "object", "additionalProperties": False, "required": list(required), "properties": properties}


# The fields of the Altinity ClickHouseInstallation CRD (clickhouse.altinity.com/v1) this chart
# renders, as the operator's CRD types them; anything else is refused. The pod and claim specs
# inside are Kubernetes PodSpec / PersistentVolumeClaimSpec and are validated as such below.
CHI_SCHEMA = _crd_object(
    {
        "apiVersion": {"const": "clickhouse.altinity.com/v1"},
        "kind": {"const": "ClickHouseInstallation"},
        "metadata": {"type": "object"},
        "spec": _crd_object(
            {
                "configuration": _crd_object(
                    {
                        "clusters": {"type": "array", "minItems": 1, "items": _crd_object(
                            {"name": {"type": "string", "pattern": "^[a-zA-Z0-9-]{0,15}$"},
                             "layout": _crd_object({"shardsCount": {"type": "integer", "minimum": 1},
                                                    "replicasCount": {"type": "integer", "minimum": 1}})},
                            ("name",))},
                        "users": {"type": "object", "propertyNames": {"pattern": "^[a-zA-Z0-9_]+/(k8s_secret_password|networks/ip|profile|quota|password_sha256_hex)$"},
                                  "additionalProperties": {"type": "string"}},
                    }
                ),
                "defaults": _crd_object({"templates": _crd_object({"podTemplate": {"type": "string"}, "dataVolumeClaimTemplate": {"type": "string"}})}),
                "templates": _crd_object(
                    {
                        "podTemplates": {"type": "array", "items": _crd_object({"name": {"type": "string"}, "spec": {"type": "object"}}, ("name", "spec"))},
                        "volumeClaimTemplates": {"type": "array", "items": _crd_object({"name": {"type": "string"}, "spec": {"type": "object"}}, ("name", "spec"))},
                    }
                ),
            }
        ),
    },
    ("apiVersion", "kind", "metadata", "spec"),
)


def test_clickhouse_installation(default_docs, production_docs):
    assert not [d for d in default_docs if d["kind"] == "ClickHouseInstallation"]
    (chi,) = [d for d in production_docs if d["kind"] == "ClickHouseInstallation"]
    assert chi["apiVersion"] == "clickhouse.altinity.com/v1"
    assert chi["metadata"]["name"] == f"{RELEASE}-connectome-assets-clickhouse"
    (cluster,) = chi["spec"]["configuration"]["clusters"]
    assert cluster["layout"] == {"shardsCount": 2, "replicasCount": 2}
    assert chi["spec"]["configuration"]["users"]["connectome/k8s_secret_password"] == "prod-clickhouse/password"
    (claim,) = chi["spec"]["templates"]["volumeClaimTemplates"]
    assert claim["spec"]["resources"]["requests"]["storage"] == "500Gi"
    assert claim["spec"]["storageClassName"] == "premium-rwo"
    (pod_template,) = chi["spec"]["templates"]["podTemplates"]
    assert pod_template["spec"]["containers"][0]["image"].startswith("clickhouse/clickhouse-server:")
    # structurally: the CRD fields above, the templates' names resolve, and the embedded pod and
    # claim specs are valid Kubernetes specs
    jsonschema.validate(chi, CHI_SCHEMA)
    templates = chi["spec"]["defaults"]["templates"]
    assert templates == {"podTemplate": pod_template["name"], "dataVolumeClaimTemplate": claim["name"]}
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "chi"}, "spec": pod_template["spec"]}
    pvc = {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "chi"}, "spec": claim["spec"]}
    for doc in (pod, pvc):
        kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)
    secret, key = chi["spec"]["configuration"]["users"]["connectome/k8s_secret_password"].split("/")
    assert (secret, key) == ("prod-clickhouse", "password")  # the Secret the pods' CONNECTOME_CLICKHOUSE_PASSWORD reads
    broken = json.loads(json.dumps(chi))
    broken["spec"]["configuration"]["clusters"][0]["layout"]["shards"] = 2
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, CHI_SCHEMA)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"webserver": {"replicas": -1}}, "at '/webserver/replicas': minimum: got -1, want 0"),
        ({"userCode": {"replicas": -1}}, "at '/userCode/replicas': minimum: got -1, want 0"),
        ({"volumes": {"tierCpu": {"7": "1"}}}, "invalid propertyName '7'"),
        ({"volumes": {"runner": "k8s"}}, "at '/volumes/runner': value must be one of 'kubernetes', 'local'"),
        ({"volumes": {"parallelism": 0}}, "at '/volumes/parallelism': minimum: got 0, want 1"),
        ({"steps": {"stageMemoryGib": {"connectome": 12}}}, "at '/steps/stageMemoryGib/connectome'"),
        ({"steps": {"stageMemoryGib": {"ingest": 16}}}, "invalid propertyName 'ingest'"),
        ({"steps": {"executor": "celery"}}, "at '/steps/executor': value must be one of 'k8s', 'multiprocess'"),
        ({"connectome": {"automation": True}}, "at '/connectome/automation': value must be one of 'on', 'off'"),
        ({"volumes": {"tierCpu": {"4": "lots"}}}, "at '/volumes/tierCpu/4'"),
        ({"connectome": {"objectStore": "s3://bucket"}}, "at '/connectome/objectStore'"),
        ({"connectome": {"exportsClaim": "Not_A_Name"}}, "at '/connectome/exportsClaim'"),
        ({"dagster": {"runResources": {"limits": {"memory": "lots"}}}}, "at '/dagster/runResources/limits/memory'"),
        ({"registry": {"replicas": "two"}}, "at '/registry/replicas': got string, want integer"),
        ({"userCode": {"port": "4000"}}, "at '/userCode/port': got string, want integer"),
        ({"image": {"repository": None}}, "at '/image': missing property 'repository'"),
        ({"image": {"repository": ""}}, "at '/image/repository': minLength"),
        ({"clickhouse": {"shards": 0}}, "at '/clickhouse/shards': minimum: got 0, want 1"),
        ({"imageTag": "latest"}, "additional properties 'imageTag' not allowed"),
        ({"secrets": {"postgresql": {"existingSecret": ""}}}, "at '/secrets/postgresql/existingSecret': minLength"),
    ],
)
def test_schema_rejects_nonsense(chart, values, message):
    with pytest.raises(helm.HelmValuesError) as raised:
        chart.render(values, name=RELEASE, namespace=NAMESPACE)
    assert "values don't meet the specifications of the schema" in str(raised.value)
    assert message in str(raised.value)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"volumes": {"runner": "kubernetes"}}, "volumes.runner kubernetes needs a gs:// connectome.objectStore"),
        ({"connectome": {"clickhouse": {"host": ""}}}, "connectome.clickhouse.host is empty and clickhouse.install is false"),
    ],
)
def test_render_refuses_inconsistent_values(chart, values, message):
    with pytest.raises(helm.HelmRenderError) as raised:
        chart.render(values, name=RELEASE, namespace=NAMESPACE)
    assert message in str(raised.value)


def test_dockerfile_and_dockerignore():
    root = CHART.parents[1]
    dockerfile = (root / "Dockerfile").read_text()
    assert dockerfile.startswith("#") and "FROM python:3.11-slim" in dockerfile
    assert "DAGSTER_HOME=/opt/dagster/dagster_home" in dockerfile
    instructions = [line for line in dockerfile.splitlines() if not line.lstrip().startswith("#")]
    assert "RUN pip install . \\" in instructions
    pyproject = (root / "pyproject.toml").read_text()
    assert '"dagster-k8s==0.29.27"' in pyproject.split("[project.optional-dependencies]")[0]  # a runtime dependency of the image
    assert not [line for line in instructions if "[test]" in line]  # no test extras in the image
    assert "pip install --no-deps cect==0.3.5" in dockerfile
    assert "USER 10001:10001" in dockerfile
    ignored = set((root / ".dockerignore").read_text().split())
    assert {".venv", ".connectome", ".git", "**/__pycache__", "benchmarks/.cache"} <= ignored


@pytest.mark.parametrize("which", ["default", "production"])
def test_instance_config_is_accepted_by_dagster(which, default_docs, production_docs):
    """The rendered dagster.yaml against Dagster's own config schemas, the launcher's included."""
    from dagster._config import process_config
    from dagster._core.instance.config import dagster_instance_config_schema
    from dagster_k8s import K8sRunLauncher

    instance = instance_yaml(default_docs if which == "default" else production_docs)
    result = process_config(dagster_instance_config_schema(), instance)
    assert result.success, result.errors
    result = process_config(K8sRunLauncher.config_type(), instance["run_launcher"]["config"])
    assert result.success, result.errors
    # the run pods' resources are a valid container resources block
    resources = instance["run_launcher"]["config"]["run_k8s_config"]["container_config"]["resources"]
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "run"}, "spec": {"containers": [{"name": "dagster", "image": "x", "resources": resources}]}}
    kubernetes_validate.validate(pod, KUBE_VERSION, strict=True)


def test_rendered_instance_runs_on_postgresql(chart, postgres_url, tmp_path, monkeypatch):
    """The production dagster.yaml, rendered for a real (throwaway) PostgreSQL, loaded by Dagster:
    storage through postgresql+psycopg2 (a run and its events written), and the run queue limits
    the daemon applies."""
    import dagster as dg
    from sqlalchemy.engine import make_url

    url = make_url(postgres_url)
    values = helm.values_from_yaml(PRODUCTION_VALUES)
    values["postgresql"] = {"host": url.host, "port": url.port, "username": url.username, "database": url.database, "params": {}}
    instance_config = yaml.safe_load(one(render(chart, values), "ConfigMap", f"{RELEASE}-connectome-assets-instance")["data"]["dagster.yaml"])
    del instance_config["run_launcher"]  # it loads the in-cluster config when used; its config is checked above
    (tmp_path / "dagster.yaml").write_text(yaml.safe_dump(instance_config))
    monkeypatch.setenv("DAGSTER_PG_PASSWORD", url.password or "")
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        assert instance.run_coordinator.__class__.__name__ == "QueuedRunCoordinator"
        queue = instance.get_concurrency_config().run_queue_config
        assert queue.max_concurrent_runs == 8
        assert queue.tag_concurrency_limits == [{"key": "dagster/partition", "value": {"applyLimitPerUniqueValue": True}, "limit": 1}]

        @dg.asset
        def chart_smoke() -> int:
            return 1

        result = dg.materialize([chart_smoke], instance=instance)
        assert result.success
        assert instance.get_run_by_id(result.run_id).is_success
        assert instance.get_latest_materialization_event(dg.AssetKey("chart_smoke")) is not None
