"""The Helm chart: lint, render variants, validate them offline, and check what they promise."""

from __future__ import annotations

import base64
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.deploy.conftest import (
    CHART,
    import_or_missing,
    load_documents,
    run_helm,
    values_args,
)

RELEASE = "rel"
FULLNAME = "rel-ucwa-bridge"
ROLES = ("api", "worker", "poller")
MIN_KUBE_VERSION = "1.25.0"  # Chart.yaml kubeVersion
SENTINEL_PASSWORD = "sentinel-ucwa-password-7f3a"
SENTINEL_API_KEY = "sentinel-api-key-0123456789abcdef"
SENTINEL_WEBHOOK_SECRET = "whsec_c2VudGluZWwtd2ViaG9vay1zZWNyZXQtMTIz"
SENTINEL_ENDPOINT_SECRET = "whsec_ZW5kcG9pbnQtc2VjcmV0LXNlbnRpbmVsLTQ1Ng=="
SECRET_ENV = {"BRIDGE_UCWA_PASSWORD", "BRIDGE_API_KEYS", "BRIDGE_WEBHOOK_SECRET"}
K8S_VALIDATE_HINT = "pip install kubernetes-validate (the project's test extra)"

BASE: dict[str, Any] = {
    "config": {
        "ucwa": {
            "discoveryUrl": "https://lyncdiscover.contoso.com/Autodiscover/AutodiscoverService.svc/root",
            "username": "bot@contoso.com",
        }
    }
}
INLINE_SECRETS: dict[str, Any] = {
    **BASE,
    "secrets": {
        "ucwaPassword": SENTINEL_PASSWORD,
        "apiKeys": [SENTINEL_API_KEY],
        "webhookSecret": SENTINEL_WEBHOOK_SECRET,
    },
    "webhooks": {"url": "https://hooks.example.com/skype", "events": ["message.received"]},
}

VARIANTS: dict[str, tuple[dict[str, Any] | None, list[str]]] = {
    "defaults": (None, []),
    "inline-secrets": (INLINE_SECRETS, []),
    "external-redis": (
        {
            **INLINE_SECRETS,
            "redis": {"url": "redis://redis.example:6379/2", "bundled": {"enabled": False}},
        },
        [],
    ),
    "existing-secret": (
        {
            **BASE,
            # Secret values given alongside existingSecret must be ignored, never rendered.
            "secrets": {
                "existingSecret": "bridge-credentials",
                "ucwaPassword": SENTINEL_PASSWORD,
                "apiKeys": [SENTINEL_API_KEY],
                "webhookSecret": SENTINEL_WEBHOOK_SECRET,
            },
            "webhooks": {"url": "https://hooks.example.com/skype"},
            "redis": {"urlFromExistingSecret": True, "bundled": {"enabled": False}},
        },
        [],
    ),
    "existing-secret-endpoints": (
        {
            **BASE,
            "secrets": {"existingSecret": "bridge-credentials"},
            "webhooks": {"endpointsFromExistingSecret": True},
        },
        [],
    ),
    "endpoint-list": (
        {
            **INLINE_SECRETS,
            "secrets": {"ucwaPassword": SENTINEL_PASSWORD, "apiKeys": [SENTINEL_API_KEY]},
            "webhooks": {
                "endpoints": [
                    {
                        "id": "alerts",
                        "url": "https://alerts.example.com/skype",
                        "secrets": [SENTINEL_ENDPOINT_SECRET],
                    }
                ]
            },
        },
        [],
    ),
    "ingress-and-monitoring": (
        {
            **INLINE_SECRETS,
            "ingress": {
                "enabled": True,
                "className": "nginx",
                "hosts": [
                    {"host": "bridge.example.com", "paths": [{"path": "/", "pathType": "Prefix"}]}
                ],
                "tls": [{"secretName": "bridge-tls", "hosts": ["bridge.example.com"]}],
            },
            "serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}},
        },
        [],
    ),
    "no-persistence-one-replica": (
        INLINE_SECRETS,
        [
            "redis.bundled.persistence.enabled=false",
            "api.replicas=1",
            "worker.replicas=1",
            "poller.podDisruptionBudget.enabled=false",
            "config.extra.BRIDGE_INVITATION_TIMEOUT_S=60",
        ],
    ),
}


def kube_versions() -> list[str]:
    kv = import_or_missing("kubernetes_validate", K8S_VALIDATE_HINT)
    return sorted({MIN_KUBE_VERSION, kv.latest_version()})


_RENDERED: dict[tuple[str, str], list[dict[str, Any]]] = {}


def render(
    helm: str, tmp: Path, variant: str, kube_version: str | None = None
) -> list[dict[str, Any]]:
    key = (variant, kube_version or "")
    if key not in _RENDERED:
        values, sets = VARIANTS[variant]
        args = ["template", RELEASE, str(CHART), *values_args(values, sets, tmp)]
        if kube_version:
            args += ["--kube-version", kube_version]
        _RENDERED[key] = load_documents(run_helm(helm, *args).stdout)
    return _RENDERED[key]


@pytest.fixture(scope="module")
def tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("helm-values")


def by_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def deployment(docs: list[dict[str, Any]], role: str) -> dict[str, Any]:
    return by_kind(docs, "Deployment")[f"{FULLNAME}-{role}"]


def container(docs: list[dict[str, Any]], role: str) -> dict[str, Any]:
    containers = deployment(docs, role)["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def env_of(docs: list[dict[str, Any]], role: str) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container(docs, role).get("env", [])}


def configmap_env(docs: list[dict[str, Any]]) -> dict[str, str]:
    return by_kind(docs, "ConfigMap")[FULLNAME]["data"]


# ---------------------------------------------------------------------------------------------
# lint, render, validate
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["defaults", "inline-secrets", "existing-secret"])
def test_helm_lint_strict(helm: str, tmp: Path, variant: str) -> None:
    values, sets = VARIANTS[variant]
    result = run_helm(helm, "lint", "--strict", str(CHART), *values_args(values, sets, tmp))
    assert "0 chart(s) failed" in result.stdout


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_rendered_manifests_are_valid_kubernetes(helm: str, tmp: Path, variant: str) -> None:
    kv = import_or_missing("kubernetes_validate", K8S_VALIDATE_HINT)
    for version in kube_versions():
        docs = render(helm, tmp, variant, version)
        assert docs, "nothing rendered"
        for doc in docs:
            if doc["apiVersion"].startswith("monitoring.coreos.com/"):
                continue  # a CRD; checked structurally in test_service_monitor
            where = f"{doc['kind']}/{doc['metadata']['name']} (Kubernetes {version})"
            try:
                kv.validate(doc, version, strict=True)
            except kv.ValidationError as exc:
                pytest.fail(f"{where}: {exc.message} at {'.'.join(map(str, exc.path))}")


def test_default_render_has_every_part(helm: str, tmp: Path) -> None:
    docs = render(helm, tmp, "defaults")
    kinds = {(d["kind"], d["metadata"]["name"]) for d in docs}
    for role in ROLES:
        assert ("Deployment", f"{FULLNAME}-{role}") in kinds
        assert ("PodDisruptionBudget", f"{FULLNAME}-{role}") in kinds
    assert ("Service", f"{FULLNAME}-api") in kinds
    assert ("ConfigMap", FULLNAME) in kinds
    assert ("Secret", FULLNAME) in kinds
    assert ("ServiceAccount", FULLNAME) in kinds
    assert ("StatefulSet", f"{FULLNAME}-redis") in kinds
    assert ("Service", f"{FULLNAME}-redis") in kinds
    assert not {k for k, _ in kinds} & {"Ingress", "ServiceMonitor"}


def test_two_pollers_and_pdbs_keep_one(helm: str, tmp: Path) -> None:
    docs = render(helm, tmp, "defaults")
    assert deployment(docs, "poller")["spec"]["replicas"] == 2
    for role in ROLES:
        pdb = by_kind(docs, "PodDisruptionBudget")[f"{FULLNAME}-{role}"]
        assert pdb["spec"]["maxUnavailable"] == 1
        labels = deployment(docs, role)["spec"]["template"]["metadata"]["labels"]
        assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()


def test_roles_run_the_documented_commands(helm: str, tmp: Path) -> None:
    docs = render(helm, tmp, "inline-secrets")
    assert container(docs, "api")["args"] == ["api", "--bind", "0.0.0.0:8080"]
    assert container(docs, "worker")["args"] == ["worker"]
    assert container(docs, "poller")["args"] == ["poller"]
    images = {container(docs, role)["image"] for role in ROLES}
    assert len(images) == 1, "one image for every role"


# ---------------------------------------------------------------------------------------------
# probes, security, shutdown, volumes
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["defaults", "existing-secret", "endpoint-list"])
def test_probes(helm: str, tmp: Path, variant: str) -> None:
    docs = render(helm, tmp, variant)
    api = container(docs, "api")
    assert api["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert api["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert api["startupProbe"]["httpGet"]["path"] == "/healthz"
    assert {p["name"]: p["containerPort"] for p in api["ports"]} == {"http": 8080}
    for role in ("worker", "poller"):
        c = container(docs, role)
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            assert c[probe]["exec"]["command"] == ["ucwa-bridge", "health", role], (role, probe)
            assert c[probe]["timeoutSeconds"] >= 5


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_pods_run_as_non_root_with_read_only_root(helm: str, tmp: Path, variant: str) -> None:
    docs = render(helm, tmp, variant)
    workloads = [*by_kind(docs, "Deployment").values(), *by_kind(docs, "StatefulSet").values()]
    for workload in workloads:
        pod = workload["spec"]["template"]["spec"]
        name = workload["metadata"]["name"]
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["runAsUser"] > 0, name
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", name
        assert pod["automountServiceAccountToken"] is False, name
        for c in pod["containers"]:
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True, name
            assert sc["allowPrivilegeEscalation"] is False, name
            assert sc["capabilities"]["drop"] == ["ALL"], name
            assert sc.get("runAsUser", 1) != 0, name
            mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
            volumes = {v["name"]: v for v in pod["volumes"]}
            assert "emptyDir" in volumes[mounts["/tmp"]], f"{name}: /tmp must be an emptyDir"
            assert c.get("resources", {}).get("limits", {}).get("memory"), name


def test_api_metrics_dir_is_a_memory_emptydir(helm: str, tmp: Path) -> None:
    docs = render(helm, tmp, "defaults")
    api = container(docs, "api")
    path = env_of(docs, "api")["PROMETHEUS_MULTIPROC_DIR"]["value"]
    mount = next(m for m in api["volumeMounts"] if m["mountPath"] == path)
    volumes = {v["name"]: v for v in deployment(docs, "api")["spec"]["template"]["spec"]["volumes"]}
    assert volumes[mount["name"]]["emptyDir"]["medium"] == "Memory"
    for role in ("worker", "poller"):
        assert "PROMETHEUS_MULTIPROC_DIR" not in env_of(docs, role)


def test_graceful_shutdown_gets_30_seconds(helm: str, tmp: Path) -> None:
    docs = render(helm, tmp, "defaults")
    for role in ROLES:
        spec = deployment(docs, role)["spec"]["template"]["spec"]
        assert spec["terminationGracePeriodSeconds"] >= 30, role


def test_config_changes_roll_the_pods(helm: str, tmp: Path) -> None:
    a = deployment(render(helm, tmp, "defaults"), "worker")["spec"]["template"]["metadata"]
    b = deployment(render(helm, tmp, "inline-secrets"), "worker")["spec"]["template"]["metadata"]
    assert a["annotations"]["checksum/config"] != b["annotations"]["checksum/config"]
    assert a["annotations"]["checksum/secret"] != b["annotations"]["checksum/secret"]


# ---------------------------------------------------------------------------------------------
# secrets
# ---------------------------------------------------------------------------------------------


def assert_no_plain_secret_env(docs: list[dict[str, Any]], secret_name: str) -> None:
    for role in ROLES:
        for name, entry in env_of(docs, role).items():
            if name in SECRET_ENV or name == "BRIDGE_REDIS_URL":
                assert "value" not in entry, f"{role}: {name} rendered as a plain value"
                ref = entry["valueFrom"]["secretKeyRef"]
                assert ref["name"] == secret_name, (role, name)
    assert not SECRET_ENV & set(configmap_env(docs)), "secrets in the ConfigMap"


def test_existing_secret_is_referenced_and_nothing_is_rendered(helm: str, tmp: Path) -> None:
    docs = render(helm, tmp, "existing-secret")
    assert not by_kind(docs, "Secret"), "existingSecret set: the chart must not render a Secret"
    text = repr(docs)
    for sentinel in (SENTINEL_PASSWORD, SENTINEL_API_KEY, SENTINEL_WEBHOOK_SECRET):
        assert sentinel not in text
        assert base64.b64encode(sentinel.encode()).decode() not in text
    assert_no_plain_secret_env(docs, "bridge-credentials")
    keys = {
        role: {
            name: e["valueFrom"]["secretKeyRef"]["key"]
            for name, e in env_of(docs, role).items()
            if "valueFrom" in e
        }
        for role in ROLES
    }
    assert keys["api"] == {
        "BRIDGE_API_KEYS": "api-keys",
        "BRIDGE_WEBHOOK_SECRET": "webhook-secret",
        "BRIDGE_REDIS_URL": "redis-url",
    }
    for role in ("worker", "poller"):
        assert keys[role] == {
            "BRIDGE_UCWA_PASSWORD": "ucwa-password",
            "BRIDGE_WEBHOOK_SECRET": "webhook-secret",
            "BRIDGE_REDIS_URL": "redis-url",
        }
    assert "BRIDGE_REDIS_URL" not in configmap_env(docs)
    assert not by_kind(docs, "StatefulSet")


def test_existing_secret_can_carry_the_endpoint_list(helm: str, tmp: Path) -> None:
    docs = render(helm, tmp, "existing-secret-endpoints")
    for role in ROLES:
        env = env_of(docs, role)
        assert env["BRIDGE_WEBHOOKS_FILE"]["value"] == "/etc/ucwa-bridge/webhooks/webhooks.yaml"
        assert "BRIDGE_WEBHOOK_SECRET" not in env
        pod = deployment(docs, role)["spec"]["template"]["spec"]
        volume = next(v for v in pod["volumes"] if v["name"] == "webhooks")
        assert volume["secret"]["secretName"] == "bridge-credentials"


def test_inline_secrets_live_only_in_the_secret(helm: str, tmp: Path) -> None:
    docs = render(helm, tmp, "inline-secrets")
    secret = by_kind(docs, "Secret")[FULLNAME]
    decoded = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    assert decoded == {
        "ucwa-password": SENTINEL_PASSWORD,
        "api-keys": SENTINEL_API_KEY,
        "webhook-secret": SENTINEL_WEBHOOK_SECRET,
    }
    rest = repr([d for d in docs if d["kind"] != "Secret"])
    for sentinel in (SENTINEL_PASSWORD, SENTINEL_API_KEY, SENTINEL_WEBHOOK_SECRET):
        assert sentinel not in rest
    assert_no_plain_secret_env(docs, FULLNAME)
    # Least privilege: API keys only for the api, the UCWA password only for worker and poller.
    assert "BRIDGE_UCWA_PASSWORD" not in env_of(docs, "api")
    for role in ("worker", "poller"):
        assert "BRIDGE_API_KEYS" not in env_of(docs, role)


def test_endpoint_list_is_a_secret_file(helm: str, tmp: Path) -> None:
    yaml = pytest.importorskip("yaml")
    docs = render(helm, tmp, "endpoint-list")
    secret = by_kind(docs, "Secret")[FULLNAME]
    endpoints = yaml.safe_load(base64.b64decode(secret["data"]["webhooks.yaml"]))
    assert endpoints["endpoints"][0]["secrets"] == [SENTINEL_ENDPOINT_SECRET]
    assert SENTINEL_ENDPOINT_SECRET not in repr([d for d in docs if d["kind"] != "Secret"])
    for role in ROLES:
        assert "BRIDGE_WEBHOOKS_FILE" in env_of(docs, role)
        mounts = {m["name"]: m for m in container(docs, role)["volumeMounts"]}
        assert mounts["webhooks"]["readOnly"] is True
    assert "BRIDGE_WEBHOOK_URL" not in configmap_env(docs)


# ---------------------------------------------------------------------------------------------
# Redis, Service, Ingress, ServiceMonitor, configuration
# ---------------------------------------------------------------------------------------------


def test_bundled_redis_is_durable_and_never_evicts(helm: str, tmp: Path) -> None:
    docs = render(helm, tmp, "defaults")
    sts = by_kind(docs, "StatefulSet")[f"{FULLNAME}-redis"]
    c = sts["spec"]["template"]["spec"]["containers"][0]
    cmd = c["command"]
    flags = dict(zip(cmd[1::2], cmd[2::2], strict=True))
    assert cmd[0] == "redis-server"
    assert flags["--appendonly"] == "yes"
    assert flags["--appendfsync"] in ("everysec", "always")
    assert flags["--maxmemory-policy"] == "noeviction"
    assert flags["--dir"] == "/data"
    for probe in ("livenessProbe", "readinessProbe"):
        assert c[probe]["exec"]["command"] == ["redis-cli", "ping"]
    claim = sts["spec"]["volumeClaimTemplates"][0]
    assert claim["metadata"]["name"] == "data"
    assert claim["spec"]["resources"]["requests"]["storage"] == "1Gi"
    assert configmap_env(docs)["BRIDGE_REDIS_URL"] == f"redis://{FULLNAME}-redis:6379/0"
    assert sts["spec"]["serviceName"] in by_kind(docs, "Service")


def test_redis_without_persistence_uses_an_emptydir(helm: str, tmp: Path) -> None:
    docs = render(helm, tmp, "no-persistence-one-replica")
    sts = by_kind(docs, "StatefulSet")[f"{FULLNAME}-redis"]
    assert "volumeClaimTemplates" not in sts["spec"]
    volumes = {v["name"]: v for v in sts["spec"]["template"]["spec"]["volumes"]}
    assert "emptyDir" in volumes["data"]
    assert "PodDisruptionBudget" not in {
        d["kind"] for d in docs if d["metadata"]["name"].endswith("-poller")
    }
    assert configmap_env(docs)["BRIDGE_INVITATION_TIMEOUT_S"] == "60"


def test_external_redis(helm: str, tmp: Path) -> None:
    docs = render(helm, tmp, "external-redis")
    assert not by_kind(docs, "StatefulSet")
    assert configmap_env(docs)["BRIDGE_REDIS_URL"] == "redis://redis.example:6379/2"


def test_configmap_carries_the_plain_settings(helm: str, tmp: Path) -> None:
    data = configmap_env(render(helm, tmp, "inline-secrets"))
    assert data["BRIDGE_UCWA_DISCOVERY_URL"] == BASE["config"]["ucwa"]["discoveryUrl"]
    assert data["BRIDGE_UCWA_USERNAME"] == "bot@contoso.com"
    assert data["BRIDGE_WEBHOOK_URL"] == "https://hooks.example.com/skype"
    assert data["BRIDGE_WEBHOOK_EVENTS"] == "message.received"
    assert data["BRIDGE_WEBHOOK_ALLOW_PRIVATE"] == "false"
    assert data["BRIDGE_LOG_LEVEL"] == "INFO"
    assert data["BRIDGE_LOG_FORMAT"] == "json"
    for role in ROLES:
        refs = container(render(helm, tmp, "inline-secrets"), role)["envFrom"]
        assert refs == [{"configMapRef": {"name": FULLNAME}}]


def test_service_selects_the_api_pods(helm: str, tmp: Path) -> None:
    docs = render(helm, tmp, "defaults")
    service = by_kind(docs, "Service")[f"{FULLNAME}-api"]
    labels = deployment(docs, "api")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    for role in ("worker", "poller"):
        other = deployment(docs, role)["spec"]["template"]["metadata"]["labels"]
        assert not service["spec"]["selector"].items() <= other.items()


def test_ingress_routes_to_the_api_service(helm: str, tmp: Path) -> None:
    docs = render(helm, tmp, "ingress-and-monitoring")
    ingress = by_kind(docs, "Ingress")[FULLNAME]
    assert ingress["spec"]["ingressClassName"] == "nginx"
    assert ingress["spec"]["tls"] == [{"secretName": "bridge-tls", "hosts": ["bridge.example.com"]}]
    backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    service = by_kind(docs, "Service")[backend["name"]]
    assert backend["port"]["name"] in {p["name"] for p in service["spec"]["ports"]}


def test_service_monitor(helm: str, tmp: Path) -> None:
    docs = render(helm, tmp, "ingress-and-monitoring")
    monitor = by_kind(docs, "ServiceMonitor")[f"{FULLNAME}-api"]
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    service = by_kind(docs, "Service")[f"{FULLNAME}-api"]
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    assert monitor["spec"]["endpoints"] == [
        {"port": "http", "path": "/metrics", "interval": "30s", "scrapeTimeout": "10s"}
    ]


# ---------------------------------------------------------------------------------------------
# refusals: schema and template checks
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (
            [
                "webhooks.url=https://a.example/x",
                "webhooks.endpoints[0].id=b",
                "webhooks.endpoints[0].url=https://b.example/y",
                f"webhooks.endpoints[0].secrets[0]={SENTINEL_ENDPOINT_SECRET}",
            ],
            "not both",
        ),
        (["redis.bundled.enabled=false"], "redis.url"),
        (["webhooks.endpointsFromExistingSecret=true"], "needs secrets.existingSecret"),
        (["redis.bundled.appendfsync=no"], "appendfsync"),
        (["podSecurityContext.runAsNonRoot=false"], "runAsNonRoot"),
        (["secrets.webhookSecret=plain-text"], "webhookSecret"),
        (["secrets.apiKeys[0]=short"], "apiKeys"),
        (["config.ucwa.discoveryUrl=lyncdiscover.contoso.com"], "discoveryUrl"),
        (["worker.terminationGracePeriodSeconds=5"], "terminationGracePeriodSeconds"),
        (["replicaz=3"], "replicaz"),
    ],
)
def test_bad_values_are_refused(helm: str, sets: list[str], message: str) -> None:
    args = ["template", RELEASE, str(CHART)]
    for item in sets:
        args += ["--set", item]
    result = run_helm(helm, *args, check=False)
    assert result.returncode != 0, f"accepted: {sets}"
    assert message in result.stderr


def test_notes_render(helm: str, tmp_path: Path) -> None:
    # helm template does not print NOTES.txt; render it through a template in a copy of the chart.
    chart = tmp_path / "chart"
    shutil.copytree(CHART, chart)
    (chart / "templates" / "NOTES.txt").rename(chart / "notes.tpl")
    (chart / "templates" / "notes-probe.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: notes\ndata:\n  notes: |\n"
        '{{- tpl (.Files.Get "notes.tpl") . | nindent 4 }}\n'
    )
    show = ["--show-only", "templates/notes-probe.yaml"]
    defaults = load_documents(run_helm(helm, "template", RELEASE, str(chart), *show).stdout)
    notes = defaults[0]["data"]["notes"]
    assert "WARNING: the bridge will not start" in notes
    assert "config.ucwa.discoveryUrl" in notes
    assert f"port-forward service/{FULLNAME}-api" in notes
    values, sets = VARIANTS["existing-secret"]
    configured = load_documents(
        run_helm(
            helm, "template", RELEASE, str(chart), *show, *values_args(values, sets, tmp_path)
        ).stdout
    )
    notes = configured[0]["data"]["notes"]
    assert "WARNING" not in notes
    assert 'Secret "bridge-credentials"' in notes
