"""The Helm chart: lint, render variants, validate them offline, and check what they promise."""

from __future__ import annotations

import base64
import inspect
import json
import re
import shlex
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml

from tests.deploy.conftest import (
    CHART,
    ROOT,
    import_or_missing,
    load_documents,
    render_chart,
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
# Custom resources kubernetes-validate does not know; each has a structural test below.
CRD_GROUPS = ("monitoring.coreos.com/", "keda.sh/")

IMAGE_REPOSITORY = "registry.example.com/ucwa-bridge"
APP_VERSION = "0.1.0"  # Chart.yaml appVersion: the image tag when image.tag is empty
DISCOVERY_URL = "https://lyncdiscover.contoso.com/Autodiscover/AutodiscoverService.svc/root"
# Required values other than the secrets (the chart refuses to render without them).
BASE: dict[str, Any] = {
    "image": {"repository": IMAGE_REPOSITORY},
    "config": {"ucwa": {"discoveryUrl": DISCOVERY_URL, "username": "bot@contoso.com"}},
}
# Every required value as --set arguments, for renders of one template or one change.
REQUIRED_ARGS = [
    *("--set", f"image.repository={IMAGE_REPOSITORY}"),
    *("--set", f"config.ucwa.discoveryUrl={DISCOVERY_URL}"),
    *("--set", "config.ucwa.username=bot@contoso.com"),
    *("--set", f"secrets.ucwaPassword={SENTINEL_PASSWORD}"),
    *("--set", f"secrets.apiKeys[0]={SENTINEL_API_KEY}"),
]
INLINE_SECRETS: dict[str, Any] = {
    **BASE,
    "secrets": {
        "ucwaPassword": SENTINEL_PASSWORD,
        "apiKeys": [SENTINEL_API_KEY],
        "webhookSecret": SENTINEL_WEBHOOK_SECRET,
    },
    "webhooks": {"url": "https://hooks.example.com/skype", "events": ["message.received"]},
}

PUBLIC_PATHS = [
    {"path": "/messages", "pathType": "Prefix"},
    {"path": "/webhooks/", "pathType": "Prefix"},
    {"path": "/conversations", "pathType": "Prefix"},
    {"path": "/broadcasts", "pathType": "Prefix"},
    {"path": "/openapi.json", "pathType": "Exact"},
    {"path": "/healthz", "pathType": "Exact"},
]
READYZ_PATH = {"path": "/readyz", "pathType": "Exact"}

ZONE_SPREAD = {
    "maxSkew": 1,
    "topologyKey": "topology.kubernetes.io/zone",
    "whenUnsatisfiable": "ScheduleAnyway",
}
WORKER_SPREAD = {
    "maxSkew": 2,
    "topologyKey": "topology.kubernetes.io/zone",
    "whenUnsatisfiable": "DoNotSchedule",
    "labelSelector": {"matchLabels": {"app.kubernetes.io/component": "worker"}},
}

SENTINEL_HOSTS = [
    "redis-sentinel-0.redis-sentinel:26379",
    "redis-sentinel-1.redis-sentinel:26379",
    "redis-sentinel-2.redis-sentinel:26379",
]
INGRESS_PEER = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress"}}}
PROMETHEUS_PEER = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "prom"}}}
ADMIN_PEER = {"ipBlock": {"cidr": "10.20.0.0/16"}}
UCWA_EGRESS = {"to": [{"ipBlock": {"cidr": "203.0.113.0/24"}}], "ports": [{"port": 443}]}
METRICS_PORT = 9200
# Every optional feature on (Redis: see the two "full" variants below).
FULL_OPTIONS: dict[str, Any] = {
    "ingress": {
        "enabled": True,
        "className": "nginx",
        # The chart's paths: the public API.
        "hosts": [{"host": "bridge.example.com"}],
        "tls": [{"secretName": "bridge-tls", "hosts": ["bridge.example.com"]}],
    },
    "serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}},
    "metrics": {"enabled": True, "port": METRICS_PORT},
    "api": {
        "autoscaling": {
            "enabled": True,
            "minReplicas": 3,
            "maxReplicas": 9,
            "targetCPUUtilizationPercentage": 65,
        }
    },
    "keda": {"enabled": True, "maxReplicas": 12, "listLength": 25, "queues": ["send", "webhooks"]},
    "networkPolicy": {
        "enabled": True,
        "api": {"from": [INGRESS_PEER]},
        "metrics": {"from": [PROMETHEUS_PEER]},
        "redis": {"from": [ADMIN_PEER]},
        "egress": {"restrict": True, "to": [UCWA_EGRESS]},
    },
    "helmTest": {"enabled": True, "attempts": 5, "delaySeconds": 2},
}

VARIANTS: dict[str, tuple[dict[str, Any] | None, list[str]]] = {
    # The chart's defaults and nothing else but the values it requires.
    "defaults": (
        {**BASE, "secrets": {"ucwaPassword": SENTINEL_PASSWORD, "apiKeys": [SENTINEL_API_KEY]}},
        [],
    ),
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
                    # Paths of its own: the public API, plus /readyz for an outside monitor.
                    {"host": "bridge.example.com", "paths": [*PUBLIC_PATHS, READYZ_PATH]},
                    {"host": "chart-paths.example.com"},
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
    "full": (
        {
            **INLINE_SECRETS,
            **FULL_OPTIONS,
            "redis": {
                "bundled": {"enabled": False},
                "sentinel": {
                    "enabled": True,
                    "hosts": SENTINEL_HOSTS,
                    "masterName": "bridge-master",
                    "db": 2,
                },
            },
        },
        [],
    ),
    "full-bundled-redis": ({**INLINE_SECRETS, **FULL_OPTIONS}, []),
    "alerts-and-dashboard": (
        {
            **INLINE_SECRETS,
            "prometheusRule": {"enabled": True, "labels": {"release": "prometheus"}},
            "grafanaDashboard": {
                "enabled": True,
                "annotations": {"grafana_folder": "Messaging"},
            },
        },
        [],
    ),
    "shutdown-and-spread": (
        {
            **INLINE_SECRETS,
            "api": {
                "preStopSleepSeconds": 10,
                "gracefulTimeoutSeconds": 25,
                "terminationGracePeriodSeconds": 40,
                "topologySpreadConstraints": [ZONE_SPREAD],
            },
            "worker": {"spreadAcrossNodes": False, "topologySpreadConstraints": [WORKER_SPREAD]},
        },
        [],
    ),
    "auth-disabled": (
        {
            **BASE,
            "config": {**BASE["config"], "extra": {"BRIDGE_AUTH_DISABLED": "true"}},
            "secrets": {"ucwaPassword": SENTINEL_PASSWORD},
        },
        [],
    ),
    "keda-existing-secret": (
        {
            **BASE,
            "secrets": {"existingSecret": "bridge-credentials"},
            "redis": {"urlFromExistingSecret": True, "bundled": {"enabled": False}},
            "keda": {
                "enabled": True,
                "redis": {
                    "address": "sentinel-a:26379,sentinel-b:26379",
                    "sentinelMaster": "bridge",
                    "databaseIndex": 1,
                    "passwordKey": "redis-password",
                },
            },
        },
        [],
    ),
}
FULL_VARIANTS = ("full", "full-bundled-redis")


def kube_versions() -> list[str]:
    kv = import_or_missing("kubernetes_validate", K8S_VALIDATE_HINT)
    return sorted({MIN_KUBE_VERSION, kv.latest_version()})


def render(
    helm: str, tmp: Path, variant: str, kube_version: str | None = None
) -> list[dict[str, Any]]:
    values, sets = VARIANTS[variant]
    return render_chart(helm, tmp, variant, values, sets, kube_version, RELEASE)


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


@pytest.mark.parametrize(
    "variant",
    [
        "defaults",
        "inline-secrets",
        "existing-secret",
        *FULL_VARIANTS,
        "keda-existing-secret",
        "alerts-and-dashboard",
        "shutdown-and-spread",
    ],
)
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
            if doc["apiVersion"].startswith(CRD_GROUPS):
                continue  # a custom resource; checked structurally by its own test
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
    assert ("Pod", f"{FULLNAME}-test-readyz") in kinds
    optional = {
        "Ingress",
        "ServiceMonitor",
        "PodMonitor",
        "HorizontalPodAutoscaler",
        "ScaledObject",
        "TriggerAuthentication",
        "NetworkPolicy",
        "PrometheusRule",
    }
    assert not {k for k, _ in kinds} & optional
    assert ("ConfigMap", f"{FULLNAME}-dashboard") not in kinds
    for role in ROLES:
        assert "replicas" in deployment(docs, role)["spec"], role


def test_full_render_has_every_optional_part(helm: str, tmp: Path) -> None:
    for variant in FULL_VARIANTS:
        kinds = {(d["kind"], d["metadata"]["name"]) for d in render(helm, tmp, variant)}
        assert ("Ingress", FULLNAME) in kinds
        assert ("ServiceMonitor", f"{FULLNAME}-api") in kinds
        assert ("PodMonitor", f"{FULLNAME}-worker-poller") in kinds
        assert ("HorizontalPodAutoscaler", f"{FULLNAME}-api") in kinds
        assert ("ScaledObject", f"{FULLNAME}-worker") in kinds
        assert ("Pod", f"{FULLNAME}-test-readyz") in kinds
        for role in ROLES:
            assert ("NetworkPolicy", f"{FULLNAME}-{role}") in kinds
            assert ("PodDisruptionBudget", f"{FULLNAME}-{role}") in kinds
    assert ("StatefulSet", f"{FULLNAME}-redis") not in {
        (d["kind"], d["metadata"]["name"]) for d in render(helm, tmp, "full")
    }


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
    pods = [(w["metadata"]["name"], w["spec"]["template"]["spec"]) for w in workloads]
    pods += [(p["metadata"]["name"], p["spec"]) for p in by_kind(docs, "Pod").values()]
    assert pods
    for name, pod in pods:
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


def job_timeouts(env: Mapping[str, str], connection: redis.Redis) -> dict[str, int]:
    """The RQ job timeouts the code uses, read from the code (``env``: the pods' settings):
    a retry is really enqueued on ``connection`` and its stored job read back."""

    from rq.job import Job

    from bridge.outbound.intake import Intake
    from bridge.outbound.messages import MessageStore
    from bridge.outbound.outcomes import Outbound
    from bridge.webhooks.settings import WebhookSettings

    outbound = Outbound(connection, store=MessageStore(connection))
    retry = Job.fetch(outbound.enqueue_send("msg_" + "0" * 32), connection=connection)
    return {
        "send job enqueued by the API (bridge.outbound.intake)": int(
            inspect.signature(Intake).parameters["job_timeout_s"].default
        ),
        "send retry or check (bridge.outbound.outcomes)": int(retry.timeout or 0),
        "webhook delivery (bridge.webhooks)": WebhookSettings.from_env(env).job_timeout_s,
    }


def worker_grace(docs: list[dict[str, Any]]) -> int:
    return int(
        deployment(docs, "worker")["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    )


def test_worker_outlives_its_longest_job(helm: str, tmp: Path, redis_client: redis.Redis) -> None:
    # SIGTERM lets a worker finish its job; the kubelet's SIGKILL must not come before RQ's
    # own timeout would have ended it.
    docs = render(helm, tmp, "defaults")
    timeouts = job_timeouts(configmap_env(docs), redis_client)
    longest = max(timeouts.values())
    assert worker_grace(docs) > longest, timeouts
    # The chart knows the same numbers: it refuses exactly the too-short values.
    base = ["template", RELEASE, str(CHART), *REQUIRED_ARGS]
    base += ["--show-only", "templates/deployment-worker.yaml"]
    refused = run_helm(
        helm, *base, "--set", f"worker.terminationGracePeriodSeconds={longest}", check=False
    )
    assert refused.returncode != 0 and "terminationGracePeriodSeconds" in refused.stderr
    run_helm(helm, *base, "--set", f"worker.terminationGracePeriodSeconds={longest + 1}")


def test_worker_grace_follows_the_webhook_timeout(helm: str, redis_client: redis.Redis) -> None:
    extra = {"BRIDGE_WEBHOOK_TIMEOUT_S": "250.5"}
    webhook = job_timeouts(extra, redis_client)["webhook delivery (bridge.webhooks)"]
    assert webhook > 150, "pick a timeout whose job outlasts the default grace period"
    base = [
        "template",
        RELEASE,
        str(CHART),
        *REQUIRED_ARGS,
        "--show-only",
        "templates/deployment-worker.yaml",
        "--set-string",
        f"config.extra.BRIDGE_WEBHOOK_TIMEOUT_S={extra['BRIDGE_WEBHOOK_TIMEOUT_S']}",
    ]
    refused = run_helm(
        helm, *base, "--set", f"worker.terminationGracePeriodSeconds={webhook}", check=False
    )
    assert refused.returncode != 0 and f"({webhook} s)" in refused.stderr
    docs = load_documents(
        run_helm(helm, *base, "--set", f"worker.terminationGracePeriodSeconds={webhook + 1}").stdout
    )
    assert worker_grace(docs) == webhook + 1


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
        (["worker.terminationGracePeriodSeconds=120"], "longer than the longest job timeout"),
        (["replicaz=3"], "replicaz"),
        # Redis Sentinel
        (
            [
                "redis.sentinel.enabled=true",
                "redis.sentinel.hosts[0]=s:26379",
                "redis.sentinel.masterName=m",
            ],
            "redis.bundled.enabled=false",
        ),
        (
            [
                "redis.bundled.enabled=false",
                "redis.url=redis://r:6379/0",
                "redis.sentinel.enabled=true",
                "redis.sentinel.hosts[0]=s:26379",
                "redis.sentinel.masterName=m",
            ],
            "excludes redis.url",
        ),
        (
            [
                "redis.bundled.enabled=false",
                "secrets.existingSecret=s",
                "redis.urlFromExistingSecret=true",
                "redis.sentinel.enabled=true",
                "redis.sentinel.hosts[0]=s:26379",
                "redis.sentinel.masterName=m",
            ],
            "redis.urlFromExistingSecret",
        ),
        (
            [
                "redis.bundled.enabled=false",
                "redis.sentinel.enabled=true",
                "redis.sentinel.masterName=m",
            ],
            "redis.sentinel.hosts",
        ),
        (
            [
                "redis.bundled.enabled=false",
                "redis.sentinel.enabled=true",
                "redis.sentinel.hosts[0]=s:26379",
            ],
            "redis.sentinel.masterName",
        ),
        (["redis.sentinel.hosts[0]=no-port"], "redis.sentinel.hosts"),
        # HPA
        (
            [
                "api.autoscaling.enabled=true",
                "api.autoscaling.minReplicas=5",
                "api.autoscaling.maxReplicas=2",
            ],
            "minReplicas",
        ),
        (["api.autoscaling.enabled=true", "api.resources.requests=null"], "requests.cpu"),
        # KEDA
        (["keda.enabled=true", "keda.minReplicas=0"], "minReplicas"),
        (["keda.enabled=true", "keda.queues[0]=default"], "queues"),
        (
            ["keda.enabled=true", "keda.redis.passwordKey=redis-password"],
            "needs secrets.existingSecret",
        ),
        (
            [
                "keda.enabled=true",
                "secrets.existingSecret=s",
                "redis.bundled.enabled=false",
                "redis.urlFromExistingSecret=true",
            ],
            "keda.redis.address is required",
        ),
        (
            ["keda.enabled=true", "redis.bundled.enabled=false", "redis.url=redis://:pw@r:6379/0"],
            "redis.url carries credentials",
        ),
        (
            [
                "keda.enabled=true",
                "redis.bundled.enabled=false",
                "redis.url=unix:///run/redis.sock",
            ],
            "keda.redis.address",
        ),
        (["networkPolicy.api.from[0]=everyone"], "networkPolicy"),
        # API shutdown and spreading
        (["api.preStopSleepSeconds=-1"], "preStopSleepSeconds"),
        (["config.extra.BRIDGE_API_GRACEFUL_TIMEOUT_S=30"], "set api.gracefulTimeoutSeconds"),
        (
            [
                "worker.topologySpreadConstraints[0].maxSkew=1",
                "worker.topologySpreadConstraints[0].whenUnsatisfiable=ScheduleAnyway",
            ],
            "topologyKey",
        ),
    ],
)
def test_bad_values_are_refused(helm: str, sets: list[str], message: str) -> None:
    args = ["template", RELEASE, str(CHART), *REQUIRED_ARGS]
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
    values, sets = VARIANTS["defaults"]
    defaults = load_documents(
        run_helm(
            helm, "template", RELEASE, str(chart), *show, *values_args(values, sets, tmp_path)
        ).stdout
    )
    notes = defaults[0]["data"]["notes"]
    assert f"port-forward service/{FULLNAME}-api" in notes
    values, sets = VARIANTS["existing-secret"]
    configured = load_documents(
        run_helm(
            helm, "template", RELEASE, str(chart), *show, *values_args(values, sets, tmp_path)
        ).stdout
    )
    notes = configured[0]["data"]["notes"]
    assert 'Secret "bridge-credentials"' in notes
    assert f"helm test {RELEASE} --namespace default" in notes
    values, sets = VARIANTS["full"]
    full = load_documents(
        run_helm(
            helm, "template", RELEASE, str(chart), *show, *values_args(values, sets, tmp_path)
        ).stdout
    )
    notes = full[0]["data"]["notes"]
    assert "3-9 api (HPA on CPU)" in notes
    assert "1-12 worker (KEDA on rq:queue:send, rq:queue:webhooks)" in notes
    assert 'Sentinel master "bridge-master" (db 2)' in notes
    assert "NetworkPolicies are on" in notes


# ---------------------------------------------------------------------------------------------
# the install path: required values refused at render time, not by crash-looping pods
# ---------------------------------------------------------------------------------------------


def missing_values(result: subprocess.CompletedProcess[str]) -> list[str]:
    """The value names helm's "missing required values" error lists, in order."""
    assert result.returncode != 0, "rendered although values are missing"
    assert "missing required values" in result.stderr, result.stderr
    names = []
    for line in result.stderr.splitlines():
        if line.startswith("  - "):
            match = re.match(r"[\w.]+", line[4:])
            assert match, line
            names.append(match.group())
    return names


def required_args_without(*names: str) -> list[str]:
    """REQUIRED_ARGS less the --set of each value in ``names``."""
    args: list[str] = []
    for flag, item in zip(REQUIRED_ARGS[::2], REQUIRED_ARGS[1::2], strict=True):
        if item.split("=")[0].split("[")[0] not in names:
            args += [flag, item]
    return args


def test_install_without_values_names_every_missing_one(helm: str) -> None:
    result = run_helm(helm, "template", RELEASE, str(CHART), check=False)
    assert missing_values(result) == [
        "image.repository",
        "config.ucwa.discoveryUrl",
        "config.ucwa.username",
        "secrets.ucwaPassword",
        "secrets.apiKeys",
    ]
    # The image line says how to get an image, since none is published.
    image_line = next(ln for ln in result.stderr.splitlines() if "image.repository" in ln)
    assert "docker build -t registry.example.com/ucwa-bridge:" in image_line
    assert "--set image.repository=registry.example.com/ucwa-bridge" in image_line


@pytest.mark.parametrize(
    ("dropped", "extra_sets", "named"),
    [
        (["image.repository"], [], ["image.repository"]),
        (["config.ucwa.discoveryUrl"], [], ["config.ucwa.discoveryUrl"]),
        (["config.ucwa.username"], [], ["config.ucwa.username"]),
        (["secrets.ucwaPassword"], [], ["secrets.ucwaPassword"]),
        (["secrets.apiKeys"], [], ["secrets.apiKeys"]),
        ([], ["webhooks.url=https://hooks.example.com/skype"], ["secrets.webhookSecret"]),
        ([], ["redis.bundled.enabled=false"], ["redis.url"]),
        (
            ["image.repository", "secrets.apiKeys"],
            ["redis.bundled.enabled=false"],
            ["image.repository", "secrets.apiKeys", "redis.url"],
        ),
    ],
)
def test_each_missing_value_is_named(
    helm: str, dropped: list[str], extra_sets: list[str], named: list[str]
) -> None:
    args = ["template", RELEASE, str(CHART), *required_args_without(*dropped)]
    for item in extra_sets:
        args += ["--set", item]
    assert missing_values(run_helm(helm, *args, check=False)) == named


@pytest.mark.parametrize(
    "sets",
    [
        # The Secret named by existingSecret stands for every inline secret.
        [
            "secrets.existingSecret=bridge-credentials",
            "webhooks.url=https://hooks.example.com/skype",
        ],
        # With the API's key check off, no API keys are needed.
        ["config.extra.BRIDGE_AUTH_DISABLED=true"],
    ],
)
def test_values_that_stand_in_for_secrets(helm: str, sets: list[str]) -> None:
    args = ["template", RELEASE, str(CHART)]
    args += required_args_without("secrets.ucwaPassword", "secrets.apiKeys")
    if "secrets.existingSecret" not in sets[0]:
        args += ["--set", f"secrets.ucwaPassword={SENTINEL_PASSWORD}"]
    for item in sets:
        args += ["--set", item]
    docs = load_documents(run_helm(helm, *args).stdout)
    assert {"Deployment"} <= {d["kind"] for d in docs}


def pod_environment(docs: list[dict[str, Any]], role: str) -> dict[str, str]:
    """The environment a role's container starts with: the ConfigMap, then its env entries,
    secret ones read from the rendered Secret (a key it lacks would stop the pod)."""
    secrets = by_kind(docs, "Secret")
    env = dict(configmap_env(docs))
    for name, entry in env_of(docs, role).items():
        if "value" in entry:
            env[name] = entry["value"]
            continue
        ref = entry["valueFrom"]["secretKeyRef"]
        assert ref["name"] in secrets, f"{role}: {name} reads Secret {ref['name']}, not rendered"
        data = secrets[ref["name"]]["data"]
        assert ref["key"] in data, f"{role}: {name} reads key {ref['key']!r}, not in the Secret"
        env[name] = base64.b64decode(data[ref["key"]]).decode()
    return env


@pytest.mark.parametrize("variant", ["defaults", "inline-secrets", "auth-disabled"])
def test_required_values_are_enough_for_every_role_to_start(
    helm: str, tmp: Path, variant: str
) -> None:
    from bridge.config.settings import Settings

    docs = render(helm, tmp, variant)
    for role in ROLES:
        # Raises what would stop the pod.
        Settings.from_env(role, pod_environment(docs, role))  # type: ignore[arg-type]
    if variant == "auth-disabled":
        assert "BRIDGE_API_KEYS" not in env_of(docs, "api")
    app_version = yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]
    images = {container(docs, role)["image"] for role in ROLES}
    images |= {
        c["image"] for pod in by_kind(docs, "Pod").values() for c in pod["spec"]["containers"]
    }
    assert images == {f"{IMAGE_REPOSITORY}:{app_version}"}, "the image the user pushed"


def test_image_tag_is_the_one_set(helm: str) -> None:
    args = ["template", RELEASE, str(CHART), *REQUIRED_ARGS, "--set", "image.tag=2024.5.1"]
    docs = load_documents(
        run_helm(helm, *args, "--show-only", "templates/deployment-api.yaml").stdout
    )
    assert container(docs, "api")["image"] == f"{IMAGE_REPOSITORY}:2024.5.1"


# ---------------------------------------------------------------------------------------------
# the README's install path, followed literally
# ---------------------------------------------------------------------------------------------


def readme_helm_section() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text[text.index("### With Helm") :]
    return section[: section.index("\n### ", 1)]


def readme_helm_commands() -> list[list[str]]:
    """The commands of the section's first sh block, continuation lines joined."""
    block = readme_helm_section().split("```sh\n", 1)[1].split("```", 1)[0]
    lines = block.replace("\\\n", " ").splitlines()
    return [shlex.split(line, comments=True) for line in lines if line.strip()]


def command(commands: list[list[str]], *start: str) -> list[str]:
    found = [c for c in commands if c[: len(start)] == list(start)]
    assert len(found) == 1, f"one {' '.join(start)} command in the README's Helm section"
    return found[0]


def option(words: list[str], name: str) -> str:
    return words[words.index(name) + 1]


def secret_keys_read(docs: list[dict[str, Any]], secret: str) -> set[str]:
    """Keys of Secret ``secret`` the rendered pods read (environment and mounted files)."""
    keys: set[str] = set()
    pods = [w["spec"]["template"]["spec"] for w in by_kind(docs, "Deployment").values()]
    pods += [p["spec"] for p in by_kind(docs, "Pod").values()]
    for pod in pods:
        for c in pod["containers"]:
            for entry in c.get("env", []):
                ref = entry.get("valueFrom", {}).get("secretKeyRef")
                if ref and ref["name"] == secret:
                    keys.add(ref["key"])
        for volume in pod.get("volumes", []):
            if volume.get("secret", {}).get("secretName") == secret:
                keys |= {item["key"] for item in volume["secret"]["items"]}
    return keys


def test_readme_install_commands_render_with_the_secret_they_create(helm: str) -> None:
    commands = readme_helm_commands()
    image = option(command(commands, "docker", "build"), "-t")
    assert command(commands, "docker", "push")[2] == image
    create = next(c for c in commands if c[:1] == ["kubectl"] and "generic" in c)
    secret = option(create, "generic")
    created = {a.split("=", 2)[1] for a in create if a.startswith("--from-literal=")}
    install = command(commands, "helm", "install")
    assert option(create, "--namespace") == option(install, "--namespace")
    args = ["template", install[2], str(CHART), "--namespace", option(install, "--namespace")]
    for index, word in enumerate(install):
        if word == "--set":
            args += ["--set", install[index + 1]]
    docs = load_documents(run_helm(helm, *args).stdout)
    # The Secret the README creates is the one the chart reads, with exactly the keys it reads.
    assert not by_kind(docs, "Secret")
    assert secret_keys_read(docs, secret) == created
    images = {c["image"] for d in by_kind(docs, "Deployment").values() for c in pod_containers(d)}
    assert images == {image}, "the image the README builds and pushes"


def pod_containers(workload: dict[str, Any]) -> list[dict[str, Any]]:
    containers: list[dict[str, Any]] = workload["spec"]["template"]["spec"]["containers"]
    return containers


def test_readme_example_error_is_what_helm_prints(helm: str) -> None:
    install = command(readme_helm_commands(), "helm", "install")
    args = ["template", install[2], str(CHART)]
    for index, word in enumerate(install):
        value = install[index + 1] if word == "--set" else ""
        if value and not value.startswith(("image.", "config.ucwa.username=")):
            args += ["--set", value]
    result = run_helm(helm, *args, check=False)
    assert missing_values(result) == ["image.repository", "config.ucwa.username"]
    example = readme_helm_section().split("```text\n", 1)[1].split("```", 1)[0]
    printed = [line for line in result.stderr.splitlines() if line.startswith("  - ")]
    assert [line for line in example.splitlines() if line.startswith("  - ")] == printed


def test_readme_lists_every_secret_key() -> None:
    listed = set(re.findall(r"^\| `([^`]+)` \|", readme_helm_section(), re.MULTILINE))
    keys = yaml.safe_load((CHART / "values.yaml").read_text(encoding="utf-8"))["secrets"]["keys"]
    # One key per account: the prefix and the account's id.
    prefix = keys.pop("accountPasswordPrefix")
    assert set(keys.values()) | {f"{prefix}<id>"} <= listed


# ---------------------------------------------------------------------------------------------
# API shutdown: preStop sleep, then gunicorn's graceful timeout, within the grace period
# ---------------------------------------------------------------------------------------------


def api_shutdown(docs: list[dict[str, Any]]) -> tuple[list[str] | None, int, int]:
    """(preStop command or None, BRIDGE_API_GRACEFUL_TIMEOUT_S, terminationGracePeriodSeconds)."""
    api = container(docs, "api")
    hook = api.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command")
    graceful = int(env_of(docs, "api")["BRIDGE_API_GRACEFUL_TIMEOUT_S"]["value"])
    grace = deployment(docs, "api")["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    return hook, graceful, int(grace)


@pytest.mark.parametrize(
    ("variant", "sleep", "graceful", "grace"),
    [("defaults", 5, 20, 30), ("shutdown-and-spread", 10, 25, 40)],
)
def test_api_drains_before_it_stops(
    helm: str, tmp: Path, variant: str, sleep: int, graceful: int, grace: int
) -> None:
    docs = render(helm, tmp, variant)
    assert api_shutdown(docs) == (["sleep", str(sleep)], graceful, grace)
    # The kubelet counts the hook inside the grace period: both must fit, with room to exit.
    assert grace > sleep + graceful
    for role in ("worker", "poller"):
        assert "lifecycle" not in container(docs, role), role


def test_api_pre_stop_hook_can_be_turned_off(helm: str) -> None:
    args = ["template", RELEASE, str(CHART), *REQUIRED_ARGS, "--set", "api.preStopSleepSeconds=0"]
    docs = load_documents(
        run_helm(helm, *args, "--show-only", "templates/deployment-api.yaml").stdout
    )
    assert api_shutdown(docs) == (None, 20, 30)


def test_api_grace_period_must_outlast_the_hook_and_the_drain(helm: str) -> None:
    base = ["template", RELEASE, str(CHART), *REQUIRED_ARGS]
    base += ["--set", "api.preStopSleepSeconds=12", "--set", "api.gracefulTimeoutSeconds=25"]
    refused = run_helm(helm, *base, "--set", "api.terminationGracePeriodSeconds=37", check=False)
    assert refused.returncode != 0
    assert "api.terminationGracePeriodSeconds (37) must be longer" in refused.stderr
    assert "(37 s)" in refused.stderr
    docs = load_documents(
        run_helm(helm, *base, "--set", "api.terminationGracePeriodSeconds=38").stdout
    )
    assert api_shutdown(docs) == (["sleep", "12"], 25, 38)


# ---------------------------------------------------------------------------------------------
# Ingress: the public API only, never /metrics
# ---------------------------------------------------------------------------------------------

# Served by the API, kept inside the cluster by the chart's default paths.
INTERNAL_ROUTES = {"/metrics", "/readyz"}


def ingress_routes(path: dict[str, str], request_path: str) -> bool:
    """Whether an Ingress path sends ``request_path`` to its backend (Kubernetes' rules: Prefix
    matches whole path elements; ImplementationSpecific read as a plain string prefix)."""
    kind = path.get("pathType", "Prefix")
    if kind == "Exact":
        return request_path == path["path"]
    if kind == "Prefix":
        want = [part for part in path["path"].split("/") if part]
        have = [part for part in request_path.split("/") if part]
        return have[: len(want)] == want
    return request_path.startswith(path["path"])


def api_routes(redis_client: redis.Redis) -> set[str]:
    """A request path for every URL rule the API serves (placeholders filled in)."""
    from bridge.api import create_app
    from bridge.config.settings import Settings

    env = {"BRIDGE_REDIS_URL": "redis://localhost:6379/0", "BRIDGE_API_KEYS": SENTINEL_API_KEY}
    app = create_app(Settings.from_env("api", env), redis_client)
    rules = {r.rule for r in app.url_map.iter_rules() if r.endpoint != "static"}
    return {re.sub(r"<(?:[^:>]+:)?([^>]+)>", r"\1", rule) for rule in rules}


@pytest.mark.parametrize("variant", ["ingress-and-monitoring", "full"])
def test_ingress_routes_the_public_api_and_never_metrics(
    helm: str, tmp: Path, variant: str, redis_client: redis.Redis
) -> None:
    docs = render(helm, tmp, variant)
    ingress = by_kind(docs, "Ingress")[FULLNAME]
    service = by_kind(docs, "Service")[f"{FULLNAME}-api"]
    routes = api_routes(redis_client)
    assert routes >= INTERNAL_ROUTES and "/messages" in routes
    for rule in ingress["spec"]["rules"]:
        paths = rule["http"]["paths"]
        for path in paths:
            backend = path["backend"]["service"]
            assert backend["name"] == service["metadata"]["name"]
            assert backend["port"] == {"name": "http"}
        routed = {route for route in routes if any(ingress_routes(p, route) for p in paths)}
        opted_in = {route for route in INTERNAL_ROUTES if route in {p["path"] for p in paths}}
        assert routed == (routes - INTERNAL_ROUTES) | opted_in, rule["host"]
        for probe in ("/metrics", "/metrics/", "/metrics/x"):
            assert not any(ingress_routes(p, probe) for p in paths), (rule["host"], probe)
    # The Service the Ingress reaches carries the API's http port only: no metrics port of
    # the worker or poller pods, which the Service never selects anyway.
    assert [p["name"] for p in service["spec"]["ports"]] == ["http"]
    metrics_port = container(docs, "worker")["ports"][0]["containerPort"]
    assert metrics_port not in {p["port"] for p in service["spec"]["ports"]}


@pytest.mark.parametrize(
    ("path", "path_type"),
    [
        ("/", "Prefix"),
        ("/metrics", "Prefix"),
        ("/metrics/", "Prefix"),
        ("/metrics", "Exact"),
        ("/", "ImplementationSpecific"),
        ("/met", "ImplementationSpecific"),
    ],
)
@pytest.mark.parametrize("where", ["ingress.paths[0]", "ingress.hosts[0].paths[0]"])
def test_ingress_paths_that_would_route_metrics_are_refused(
    helm: str, where: str, path: str, path_type: str
) -> None:
    assert ingress_routes({"path": path, "pathType": path_type}, "/metrics")
    args = ["template", RELEASE, str(CHART), *REQUIRED_ARGS, "--set", "ingress.enabled=true"]
    args += ["--set", f"{where}.path={path}", "--set", f"{where}.pathType={path_type}"]
    if where.startswith("ingress.hosts"):
        args += ["--set", "ingress.hosts[0].host=bridge.example.com"]
    result = run_helm(helm, *args, check=False)
    assert result.returncode != 0, f"accepted {path} ({path_type})"
    assert f'path "{path}" ({path_type})' in result.stderr
    assert "would route the API's /metrics" in result.stderr


# ---------------------------------------------------------------------------------------------
# spreading the pods of each role over nodes
# ---------------------------------------------------------------------------------------------


def spread(docs: list[dict[str, Any]], role: str) -> list[dict[str, Any]]:
    pod = deployment(docs, role)["spec"]["template"]["spec"]
    constraints: list[dict[str, Any]] = pod.get("topologySpreadConstraints", [])
    return constraints


@pytest.mark.parametrize("variant", ["defaults", "full"])
def test_every_role_spreads_over_nodes(helm: str, tmp: Path, variant: str) -> None:
    docs = render(helm, tmp, variant)
    for role in ROLES:
        (constraint,) = spread(docs, role)
        assert {k: v for k, v in constraint.items() if k != "labelSelector"} == {
            "maxSkew": 1,
            "topologyKey": "kubernetes.io/hostname",
            "whenUnsatisfiable": "ScheduleAnyway",
        }
        # It counts the pods of this role only: api pods spread among api pods.
        for other in ROLES:
            counted = selects(constraint["labelSelector"], pod_labels(docs, other))
            assert counted == (other == role), (role, other)


def test_spread_constraints_are_configurable(helm: str, tmp: Path) -> None:
    docs = render(helm, tmp, "shutdown-and-spread")
    hostname, zone = spread(docs, "api")
    assert hostname["topologyKey"] == "kubernetes.io/hostname"
    assert {k: v for k, v in zone.items() if k != "labelSelector"} == ZONE_SPREAD
    assert selects(zone["labelSelector"], pod_labels(docs, "api")), "the role's labels filled in"
    assert not selects(zone["labelSelector"], pod_labels(docs, "worker"))
    # spreadAcrossNodes off; a constraint with a selector of its own is kept as given.
    assert spread(docs, "worker") == [WORKER_SPREAD]
    assert [c["topologyKey"] for c in spread(docs, "poller")] == ["kubernetes.io/hostname"]


# ---------------------------------------------------------------------------------------------
# autoscaling: the API's HPA, the workers' KEDA ScaledObject
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", FULL_VARIANTS)
def test_api_hpa(helm: str, tmp: Path, variant: str) -> None:
    docs = render(helm, tmp, variant)
    hpa = by_kind(docs, "HorizontalPodAutoscaler")[f"{FULLNAME}-api"]
    assert hpa["apiVersion"] == "autoscaling/v2"
    target = hpa["spec"]["scaleTargetRef"]
    assert target == {"apiVersion": "apps/v1", "kind": "Deployment", "name": f"{FULLNAME}-api"}
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (3, 9)
    assert hpa["spec"]["metrics"] == [
        {
            "type": "Resource",
            "resource": {
                "name": "cpu",
                "target": {"type": "Utilization", "averageUtilization": 65},
            },
        }
    ]
    api = deployment(docs, "api")
    assert "replicas" not in api["spec"], "the HPA owns the replica count"
    assert container(docs, "api")["resources"]["requests"]["cpu"]
    assert deployment(docs, "poller")["spec"]["replicas"] == 2


def scaled_object(docs: list[dict[str, Any]]) -> dict[str, Any]:
    so = by_kind(docs, "ScaledObject")[f"{FULLNAME}-worker"]
    assert so["apiVersion"] == "keda.sh/v1alpha1"
    assert so["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": f"{FULLNAME}-worker",
    }
    assert "replicas" not in deployment(docs, "worker")["spec"], "KEDA owns the replica count"
    # RQ's scheduler runs inside the workers: never scale them to zero.
    assert so["spec"]["minReplicaCount"] >= 1
    assert so["spec"]["maxReplicaCount"] >= so["spec"]["minReplicaCount"]
    for trigger in so["spec"]["triggers"]:
        # KEDA's trigger metadata is a map of strings.
        assert all(isinstance(v, str) for v in trigger["metadata"].values()), trigger
    return so


def rq_list(queue: str) -> str:
    from rq import Queue

    return f"{Queue.redis_queue_namespace_prefix}{queue}"


def test_keda_scales_workers_on_the_send_queue_of_the_bundled_redis(helm: str, tmp: Path) -> None:
    from bridge.outbound.intake import SEND_QUEUE
    from bridge.webhooks.jobs import QUEUE_NAME as WEBHOOK_QUEUE

    docs = render(helm, tmp, "full-bundled-redis")
    so = scaled_object(docs)
    assert so["spec"]["maxReplicaCount"] == 12
    triggers = so["spec"]["triggers"]
    assert [t["metadata"]["listName"] for t in triggers] == [
        rq_list(SEND_QUEUE),
        rq_list(WEBHOOK_QUEUE),
    ]
    assert rq_list(SEND_QUEUE) == "rq:queue:send"
    redis_service = by_kind(docs, "Service")[f"{FULLNAME}-redis"]
    redis_url = configmap_env(docs)["BRIDGE_REDIS_URL"]
    for trigger in triggers:
        assert trigger["type"] == "redis"
        meta = trigger["metadata"]
        assert meta["listLength"] == "25"
        assert meta["address"] == f"{redis_service['metadata']['name']}:6379"
        assert redis_url == f"redis://{meta['address']}/{meta['databaseIndex']}"
        assert "authenticationRef" not in trigger
    assert not by_kind(docs, "TriggerAuthentication")


def test_keda_follows_the_sentinel_setting(helm: str, tmp: Path) -> None:
    from bridge.config.redis_conn import parse_sentinel_url

    docs = render(helm, tmp, "full")
    spec = parse_sentinel_url(configmap_env(docs)["BRIDGE_REDIS_URL"])
    for trigger in scaled_object(docs)["spec"]["triggers"]:
        assert trigger["type"] == "redis-sentinel"
        meta = trigger["metadata"]
        assert meta["addresses"] == ",".join(f"{h}:{p}" for h, p in spec.hosts)
        assert meta["sentinelMaster"] == spec.master == "bridge-master"
        assert meta["databaseIndex"] == str(spec.db) == "2"


def test_keda_reads_the_redis_password_from_the_existing_secret(helm: str, tmp: Path) -> None:
    docs = render(helm, tmp, "keda-existing-secret")
    auth = by_kind(docs, "TriggerAuthentication")[f"{FULLNAME}-worker"]
    assert auth["apiVersion"] == "keda.sh/v1alpha1"
    refs = {r["parameter"]: (r["name"], r["key"]) for r in auth["spec"]["secretTargetRef"]}
    # The bridge uses one password for the master and the sentinels; so does KEDA here.
    assert refs == {
        "password": ("bridge-credentials", "redis-password"),
        "sentinelPassword": ("bridge-credentials", "redis-password"),
    }
    (trigger,) = scaled_object(docs)["spec"]["triggers"]
    assert trigger["type"] == "redis-sentinel"
    assert trigger["authenticationRef"] == {"name": auth["metadata"]["name"]}
    assert trigger["metadata"] == {
        "addresses": "sentinel-a:26379,sentinel-b:26379",
        "sentinelMaster": "bridge",
        "databaseIndex": "1",
        "listName": "rq:queue:send",
        "listLength": "20",
    }
    assert not by_kind(docs, "Secret")


@pytest.mark.parametrize(
    ("url", "kind", "expected"),
    [
        ("redis://redis.example", "redis", {"address": "redis.example:6379", "databaseIndex": "0"}),
        (
            "rediss://redis.example:6380/4",
            "redis",
            {"address": "redis.example:6380", "databaseIndex": "4", "enableTLS": "true"},
        ),
        (
            "redis+sentinel://s1:26380,s2/master-a/3",
            "redis-sentinel",
            {"addresses": "s1:26380,s2:26379", "sentinelMaster": "master-a", "databaseIndex": "3"},
        ),
    ],
)
def test_keda_address_comes_from_the_redis_url(
    helm: str, url: str, kind: str, expected: dict[str, str]
) -> None:
    result = run_helm(
        helm,
        "template",
        RELEASE,
        str(CHART),
        *REQUIRED_ARGS,
        "--show-only",
        "templates/keda.yaml",
        "--set",
        "keda.enabled=true",
        "--set",
        "redis.bundled.enabled=false",
        "--set-string",
        f"redis.url={url.replace(',', chr(92) + ',')}",
    )
    (so,) = load_documents(result.stdout)
    (trigger,) = so["spec"]["triggers"]
    assert trigger["type"] == kind
    meta = {k: v for k, v in trigger["metadata"].items() if k not in ("listName", "listLength")}
    assert meta == expected
    if kind == "redis-sentinel":
        from bridge.config.redis_conn import parse_sentinel_url

        spec = parse_sentinel_url(url)
        assert meta["addresses"] == ",".join(f"{h}:{p}" for h, p in spec.hosts)


# ---------------------------------------------------------------------------------------------
# Redis Sentinel
# ---------------------------------------------------------------------------------------------


def test_sentinel_url(helm: str, tmp: Path) -> None:
    from bridge.config.redis_conn import parse_sentinel_url

    docs = render(helm, tmp, "full")
    url = configmap_env(docs)["BRIDGE_REDIS_URL"]
    assert url == f"redis+sentinel://{','.join(SENTINEL_HOSTS)}/bridge-master/2"
    spec = parse_sentinel_url(url)
    assert [f"{h}:{p}" for h, p in spec.hosts] == SENTINEL_HOSTS
    assert (spec.master, spec.db, spec.password) == ("bridge-master", 2, None)
    assert not by_kind(docs, "StatefulSet")
    for role in ROLES:
        assert "BRIDGE_REDIS_URL" not in env_of(docs, role), "read from the ConfigMap"


# ---------------------------------------------------------------------------------------------
# worker and poller metrics, PodMonitor
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("variant", "port"), [("defaults", 9100), ("full", METRICS_PORT)])
def test_worker_and_poller_serve_metrics(helm: str, tmp: Path, variant: str, port: int) -> None:
    docs = render(helm, tmp, variant)
    for role in ("worker", "poller"):
        assert env_of(docs, role)["BRIDGE_METRICS_PORT"] == {
            "name": "BRIDGE_METRICS_PORT",
            "value": str(port),
        }
        ports = container(docs, role)["ports"]
        assert ports == [{"name": "metrics", "containerPort": port, "protocol": "TCP"}]
    assert "BRIDGE_METRICS_PORT" not in env_of(docs, "api")
    assert "BRIDGE_METRICS_PORT" not in configmap_env(docs)


def test_worker_pods_run_the_job_runners_the_values_ask_for(helm: str, tmp_path: Path) -> None:
    docs = render(helm, tmp_path, "defaults")
    assert env_of(docs, "worker")["BRIDGE_WORKER_RUNNERS"]["value"] == "2"
    assert "BRIDGE_WORKER_RUNNERS" not in env_of(docs, "poller")
    args = ["template", RELEASE, str(CHART), *REQUIRED_ARGS, "--set", "worker.runners=1"]
    docs = load_documents(run_helm(helm, *args).stdout)
    assert env_of(docs, "worker")["BRIDGE_WORKER_RUNNERS"]["value"] == "1"
    refused = subprocess.run(
        [helm, "template", RELEASE, str(CHART), *REQUIRED_ARGS, "--set", "worker.runners=9"],
        capture_output=True,
        text=True,
    )
    assert refused.returncode != 0 and "worker.runners" in refused.stderr


def test_metrics_can_be_turned_off(helm: str, tmp_path: Path) -> None:
    args = ["template", RELEASE, str(CHART), *REQUIRED_ARGS, "--set", "metrics.enabled=false"]
    args += ["--set", "serviceMonitor.enabled=true", "--set", "networkPolicy.enabled=true"]
    docs = load_documents(run_helm(helm, *args).stdout)
    for role in ("worker", "poller"):
        assert "BRIDGE_METRICS_PORT" not in env_of(docs, role)
        assert "ports" not in container(docs, role)
        # No port to open: the pods accept no traffic at all.
        policy = by_kind(docs, "NetworkPolicy")[f"{FULLNAME}-{role}"]
        assert policy["spec"]["policyTypes"] == ["Ingress"]
        assert "ingress" not in policy["spec"]
    assert not by_kind(docs, "PodMonitor")
    assert by_kind(docs, "ServiceMonitor")


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """Whether a LabelSelector (matchLabels, matchExpressions with In) selects ``labels``."""
    if not selector.get("matchLabels", {}).items() <= labels.items():
        return False
    for expr in selector.get("matchExpressions", []):
        assert expr["operator"] == "In", expr
        if labels.get(expr["key"]) not in expr["values"]:
            return False
    return True


def pod_labels(docs: list[dict[str, Any]], role: str) -> dict[str, str]:
    labels: dict[str, str] = deployment(docs, role)["spec"]["template"]["metadata"]["labels"]
    return labels


def test_pod_monitor(helm: str, tmp: Path) -> None:
    docs = render(helm, tmp, "full")
    monitor = by_kind(docs, "PodMonitor")[f"{FULLNAME}-worker-poller"]
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    selector = monitor["spec"]["selector"]
    assert selects(selector, pod_labels(docs, "worker"))
    assert selects(selector, pod_labels(docs, "poller"))
    assert not selects(selector, pod_labels(docs, "api")), "the API has its ServiceMonitor"
    assert monitor["spec"]["podMetricsEndpoints"] == [
        {"port": "metrics", "path": "/metrics", "interval": "30s", "scrapeTimeout": "10s"}
    ]
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": ["default"]}


# ---------------------------------------------------------------------------------------------
# NetworkPolicy
# ---------------------------------------------------------------------------------------------


def policy(docs: list[dict[str, Any]], name: str) -> dict[str, Any]:
    spec: dict[str, Any] = by_kind(docs, "NetworkPolicy")[name]["spec"]
    return spec


def test_policies_select_exactly_their_role(helm: str, tmp: Path) -> None:
    docs = render(helm, tmp, "full-bundled-redis")
    for role in ROLES:
        selector = policy(docs, f"{FULLNAME}-{role}")["podSelector"]
        for other in ROLES:
            assert selects(selector, pod_labels(docs, other)) == (other == role), (role, other)


@pytest.mark.parametrize("variant", FULL_VARIANTS)
def test_network_policies(helm: str, tmp: Path, variant: str) -> None:
    docs = render(helm, tmp, variant)
    test_pod = by_kind(docs, "Pod")[f"{FULLNAME}-test-readyz"]

    api = policy(docs, f"{FULLNAME}-api")
    assert api["policyTypes"] == ["Ingress", "Egress"]
    (rule,) = api["ingress"]
    assert rule["ports"] == [{"port": "http", "protocol": "TCP"}]
    assert INGRESS_PEER in rule["from"] and PROMETHEUS_PEER in rule["from"]
    # `helm test` must still reach the API.
    assert any(
        selects(p["podSelector"], test_pod["metadata"]["labels"])
        for p in rule["from"]
        if "podSelector" in p
    )
    assert {"name": "http", "containerPort": 8080, "protocol": "TCP"} in container(docs, "api")[
        "ports"
    ]

    for role in ("worker", "poller"):
        spec = policy(docs, f"{FULLNAME}-{role}")
        assert spec["policyTypes"] == ["Ingress", "Egress"]
        # Nothing but the metrics port, and only from the configured peers.
        assert spec["ingress"] == [
            {"ports": [{"port": "metrics", "protocol": "TCP"}], "from": [PROMETHEUS_PEER]}
        ]
        assert "metrics" in {p["name"] for p in container(docs, role)["ports"]}

    for role in ROLES:
        egress = policy(docs, f"{FULLNAME}-{role}")["egress"]
        assert egress[0] == {
            "ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]
        }
        assert egress[-1] == UCWA_EGRESS
        if variant == "full-bundled-redis":
            (to_redis,) = egress[1]["to"]
            sts = by_kind(docs, "StatefulSet")[f"{FULLNAME}-redis"]
            assert selects(to_redis["podSelector"], sts["spec"]["template"]["metadata"]["labels"])
            assert egress[1]["ports"] == [{"port": 6379, "protocol": "TCP"}]
        else:
            assert len(egress) == 2

    if variant == "full":
        assert f"{FULLNAME}-redis" not in by_kind(docs, "NetworkPolicy")
        return
    redis = policy(docs, f"{FULLNAME}-redis")
    sts = by_kind(docs, "StatefulSet")[f"{FULLNAME}-redis"]
    assert selects(redis["podSelector"], sts["spec"]["template"]["metadata"]["labels"])
    assert redis["policyTypes"] == ["Ingress", "Egress"]
    assert "egress" not in redis, "Redis itself needs no outgoing traffic"
    (rule,) = redis["ingress"]
    assert rule["ports"] == [{"port": "redis", "protocol": "TCP"}]
    peers = rule["from"]
    for role in ROLES:
        assert any(
            selects(p["podSelector"], pod_labels(docs, role)) for p in peers if "podSelector" in p
        )
    keda_ns = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "keda"}}}
    assert keda_ns in peers, "KEDA's operator reads the queue length"
    assert ADMIN_PEER in peers


def test_network_policies_leave_egress_open_by_default(helm: str) -> None:
    args = ["template", RELEASE, str(CHART), *REQUIRED_ARGS, "--set", "networkPolicy.enabled=true"]
    docs = load_documents(
        run_helm(helm, *args, "--show-only", "templates/networkpolicy.yaml").stdout
    )
    assert {d["metadata"]["name"] for d in docs} == {
        f"{FULLNAME}-{role}" for role in (*ROLES, "redis")
    }
    for doc in docs:
        assert doc["spec"]["policyTypes"] == ["Ingress"], doc["metadata"]["name"]
        assert "egress" not in doc["spec"]
    api = policy(docs, f"{FULLNAME}-api")
    assert api["ingress"] == [{"ports": [{"port": "http", "protocol": "TCP"}]}], "from anywhere"
    worker = policy(docs, f"{FULLNAME}-worker")
    assert worker["ingress"] == [{"ports": [{"port": "metrics", "protocol": "TCP"}]}]
    redis_peers = policy(docs, f"{FULLNAME}-redis")["ingress"][0]["from"]
    assert len(redis_peers) == 1, "only the release's own pods (no KEDA, no extra peers)"


# ---------------------------------------------------------------------------------------------
# helm test
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def readyz_server() -> Iterator[tuple[str, list[int]]]:
    """A local stand-in for the API: answers /readyz with the next status in the list."""
    statuses: list[int] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status = statuses.pop(0) if len(statuses) > 1 else statuses[0]
            body = b'{"status": "ready"}' if status == 200 else b'{"status": "not ready"}'
            self.send_response(status if self.path == "/readyz" else 404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/readyz", statuses
    finally:
        server.shutdown()
        server.server_close()


def test_helm_test_hook_calls_readyz(
    helm: str, tmp: Path, readyz_server: tuple[str, list[int]]
) -> None:
    docs = render(helm, tmp, "full")
    pod = by_kind(docs, "Pod")[f"{FULLNAME}-test-readyz"]
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    assert pod["spec"]["restartPolicy"] == "Never"
    (c,) = pod["spec"]["containers"]
    assert c["image"] == container(docs, "api")["image"], "the chart's own image"
    env = {e["name"]: e["value"] for e in c["env"]}
    service = by_kind(docs, "Service")[f"{FULLNAME}-api"]
    port = service["spec"]["ports"][0]["port"]
    assert env["READYZ_URL"] == f"http://{service['metadata']['name']}:{port}/readyz"
    assert (env["READYZ_ATTEMPTS"], env["READYZ_DELAY_S"]) == ("5", "2")
    assert c["command"][:2] == ["python", "-c"]

    # Run the hook's script against a local server: 0 once ready, 1 when never ready.
    url, statuses = readyz_server
    script = c["command"][2]

    def run(attempts: int) -> subprocess.CompletedProcess[str]:
        hook_env = {"READYZ_URL": url, "READYZ_ATTEMPTS": str(attempts), "READYZ_DELAY_S": "0"}
        return subprocess.run(
            [sys.executable, "-c", script], env=hook_env, capture_output=True, text=True, timeout=60
        )

    statuses[:] = [503, 503, 200]
    ready = run(attempts=5)
    assert ready.returncode == 0, ready.stdout + ready.stderr
    assert "try 2/5: 503" in ready.stdout and '200 {"status": "ready"}' in ready.stdout
    statuses[:] = [503]
    not_ready = run(attempts=2)
    assert not_ready.returncode == 1, not_ready.stdout + not_ready.stderr
    assert "try 2/2: 503" in not_ready.stdout


# ---------------------------------------------------------------------------------------------
# alert rules and dashboard (opt-in)
# ---------------------------------------------------------------------------------------------


def test_prometheus_rule_and_dashboard(helm: str, tmp: Path) -> None:
    docs = render(helm, tmp, "alerts-and-dashboard")
    rule = by_kind(docs, "PrometheusRule")[FULLNAME]
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["metadata"]["labels"]["release"] == "prometheus"
    shipped = yaml.safe_load((ROOT / "deploy" / "prometheus" / "alerts.yml").read_text())
    assert rule["spec"] == {"groups": shipped["groups"]}, "the rules of deploy/prometheus"
    board = by_kind(docs, "ConfigMap")[f"{FULLNAME}-dashboard"]
    assert board["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert board["metadata"]["annotations"] == {"grafana_folder": "Messaging"}
    shipped_board = json.loads((CHART / "dashboards" / "ucwa-bridge.json").read_text())
    assert json.loads(board["data"]["ucwa-bridge.json"]) == shipped_board
