"""The Helm chart with several accounts (config.ucwa.accounts): the accounts file in a ConfigMap,
each password a file of the worker and poller pods only, the refusals, and the README's commands.

Renders are validated offline like the single-account ones (tests/deploy/test_helm.py), and the
roles' settings are loaded from what a pod would see: its environment and its mounted files.
"""

from __future__ import annotations

import base64
import re
import shlex
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.conftest import (
    CHART,
    import_or_missing,
    load_documents,
    render_chart,
    run_helm,
    values_args,
)
from tests.deploy.test_helm import (
    CRD_GROUPS,
    DISCOVERY_URL,
    FULL_OPTIONS,
    FULLNAME,
    IMAGE_REPOSITORY,
    K8S_VALIDATE_HINT,
    RELEASE,
    REQUIRED_ARGS,
    ROLES,
    SENTINEL_API_KEY,
    VARIANTS,
    by_kind,
    configmap_env,
    container,
    deployment,
    env_of,
    kube_versions,
    missing_values,
    pod_environment,
    readme_helm_section,
    secret_keys_read,
)

HR_DISCOVERY_URL = "https://lyncdiscover.hr.contoso.com/Autodiscover/AutodiscoverService.svc/root"
ACCOUNTS = [
    {"id": "default", "username": "bot@contoso.com", "default": True},
    {"id": "alerts", "username": "pager@contoso.com"},
    {"id": "hr", "username": "hr@hr.contoso.com", "discoveryUrl": HR_DISCOVERY_URL},
]
PASSWORDS = {
    "default": "sentinel-default-password-4d1e",
    "alerts": "sentinel-alerts-password-9b7c",
    "hr": "sentinel-hr-password-27fa",
}
BOUND_KEY = "sentinel-pager-key-0123456789:send@alerts"
ACCOUNTS_FILE = "/etc/ucwa-bridge/config/accounts.yaml"
PASSWORD_DIR = "/etc/ucwa-bridge/accounts"
SIGNING_IN = ("worker", "poller")

ACCOUNT_BASE: dict[str, Any] = {
    "image": {"repository": IMAGE_REPOSITORY},
    "config": {"ucwa": {"discoveryUrl": DISCOVERY_URL, "accounts": ACCOUNTS}},
}
ACCOUNT_VARIANTS: dict[str, dict[str, Any]] = {
    "accounts": {
        **ACCOUNT_BASE,
        "secrets": {"accountPasswords": PASSWORDS, "apiKeys": [SENTINEL_API_KEY, BOUND_KEY]},
    },
    "accounts-existing-secret": {
        **ACCOUNT_BASE,
        # Inline passwords next to existingSecret are ignored, never rendered.
        "secrets": {"existingSecret": "bridge-credentials", "accountPasswords": PASSWORDS},
        "webhooks": {"url": "https://hooks.example.com/skype"},
    },
    # One account in the list: the default without saying so.
    "accounts-one": {
        **ACCOUNT_BASE,
        "config": {"ucwa": {"discoveryUrl": DISCOVERY_URL, "accounts": ACCOUNTS[1:2]}},
        "secrets": {"accountPasswords": {"alerts": PASSWORDS["alerts"]}, "apiKeys": [BOUND_KEY]},
    },
    # Every account with its own discovery URL: no shared one needed.
    "accounts-own-discovery": {
        **ACCOUNT_BASE,
        "config": {
            "ucwa": {"accounts": [{**a, "discoveryUrl": HR_DISCOVERY_URL} for a in ACCOUNTS]}
        },
        "secrets": {"accountPasswords": PASSWORDS, "apiKeys": [SENTINEL_API_KEY]},
    },
    "accounts-full": {
        **ACCOUNT_BASE,
        **FULL_OPTIONS,
        "secrets": {"accountPasswords": PASSWORDS, "apiKeys": [SENTINEL_API_KEY]},
        "webhooks": {
            "endpoints": [
                {
                    "id": "pager",
                    "url": "https://alerts.example.com/skype",
                    "secrets": ["whsec_c2VudGluZWwtYWNjb3VudHMtZW5kcG9pbnQ="],
                    "accounts": ["alerts"],
                }
            ]
        },
        "poller": {"replicas": 3},
    },
}
# The passwords each variant gives the chart (none: they are in a Secret it does not render).
GIVEN = {
    "accounts": PASSWORDS,
    "accounts-existing-secret": {},
    "accounts-one": {"alerts": PASSWORDS["alerts"]},
    "accounts-own-discovery": PASSWORDS,
    "accounts-full": PASSWORDS,
}


def render(
    helm: str, tmp: Path, variant: str, kube_version: str | None = None
) -> list[dict[str, Any]]:
    return render_chart(
        helm, tmp, f"accounts:{variant}", ACCOUNT_VARIANTS[variant], (), kube_version
    )


@pytest.fixture(scope="module")
def tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("helm-accounts-values")


def accounts_file(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    configmap = by_kind(docs, "ConfigMap")[f"{FULLNAME}-accounts"]
    assert set(configmap["data"]) == {"accounts.yaml"}
    entries: list[dict[str, Any]] = yaml.safe_load(configmap["data"]["accounts.yaml"])["accounts"]
    return entries


def pod_volumes(docs: list[dict[str, Any]], role: str) -> dict[str, dict[str, Any]]:
    """The volumes a role's container mounts, by mount path."""
    volumes = {v["name"]: v for v in deployment(docs, role)["spec"]["template"]["spec"]["volumes"]}
    return {m["mountPath"]: volumes[m["name"]] for m in container(docs, role)["volumeMounts"]}


def mounted_secret_keys(docs: list[dict[str, Any]], role: str) -> dict[str, str]:
    """Each Secret key a role's container sees as a file, by the file's path."""
    files: dict[str, str] = {}
    for path, volume in pod_volumes(docs, role).items():
        for item in volume.get("secret", {}).get("items", []):
            files[f"{path}/{item['path']}"] = item["key"]
    return files


# ---------------------------------------------------------------------------------------------
# lint, render, validate
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", sorted(ACCOUNT_VARIANTS))
def test_helm_lint_strict(helm: str, tmp: Path, variant: str) -> None:
    values = ACCOUNT_VARIANTS[variant]
    result = run_helm(helm, "lint", "--strict", str(CHART), *values_args(values, [], tmp))
    assert "0 chart(s) failed" in result.stdout


@pytest.mark.parametrize("variant", sorted(ACCOUNT_VARIANTS))
def test_rendered_manifests_are_valid_kubernetes(helm: str, tmp: Path, variant: str) -> None:
    kv = import_or_missing("kubernetes_validate", K8S_VALIDATE_HINT)
    for version in kube_versions():
        for doc in render(helm, tmp, variant, version):
            if doc["apiVersion"].startswith(CRD_GROUPS):
                continue
            try:
                kv.validate(doc, version, strict=True)
            except kv.ValidationError as exc:
                where = f"{doc['kind']}/{doc['metadata']['name']} (Kubernetes {version})"
                pytest.fail(f"{where}: {exc.message} at {'.'.join(map(str, exc.path))}")


# ---------------------------------------------------------------------------------------------
# what renders
# ---------------------------------------------------------------------------------------------


def test_accounts_file_lists_the_accounts_without_passwords(helm: str, tmp: Path) -> None:
    entries = accounts_file(render(helm, tmp, "accounts"))
    assert entries == [
        {
            "id": "default",
            "username": "bot@contoso.com",
            "default": True,
            "password_file": f"{PASSWORD_DIR}/default",
        },
        {
            "id": "alerts",
            "username": "pager@contoso.com",
            "default": False,
            "password_file": f"{PASSWORD_DIR}/alerts",
        },
        {
            "id": "hr",
            "username": "hr@hr.contoso.com",
            "default": False,
            "discovery_url": HR_DISCOVERY_URL,
            "password_file": f"{PASSWORD_DIR}/hr",
        },
    ]


@pytest.mark.parametrize("variant", sorted(ACCOUNT_VARIANTS))
def test_every_role_reads_the_accounts_file(helm: str, tmp: Path, variant: str) -> None:
    docs = render(helm, tmp, variant)
    data = configmap_env(docs)
    assert "BRIDGE_UCWA_USERNAME" not in data
    assert "BRIDGE_ACCOUNTS" not in data and "BRIDGE_ACCOUNTS_FILE" not in data
    for role in ROLES:
        env = env_of(docs, role)
        assert env["BRIDGE_ACCOUNTS_FILE"] == {
            "name": "BRIDGE_ACCOUNTS_FILE",
            "value": ACCOUNTS_FILE,
        }
        assert not {"BRIDGE_UCWA_USERNAME", "BRIDGE_UCWA_PASSWORD"} & set(env), role
        directory, name = ACCOUNTS_FILE.rsplit("/", 1)
        volume = pod_volumes(docs, role)[directory]
        assert volume["configMap"]["name"] == f"{FULLNAME}-accounts", role
        assert name in by_kind(docs, "ConfigMap")[volume["configMap"]["name"]]["data"]
        mount = next(
            m for m in container(docs, role)["volumeMounts"] if m["mountPath"] == directory
        )
        assert mount["readOnly"] is True


@pytest.mark.parametrize("variant", sorted(ACCOUNT_VARIANTS))
def test_passwords_are_files_of_the_worker_and_poller_only(
    helm: str, tmp: Path, variant: str
) -> None:
    docs = render(helm, tmp, variant)
    secret = "bridge-credentials" if variant.endswith("existing-secret") else FULLNAME
    # The file each entry names is the account's key of the Secret, in both signing-in roles.
    wanted = {e["password_file"]: f"ucwa-password-{e['id']}" for e in accounts_file(docs)}
    for role in SIGNING_IN:
        assert wanted.items() <= mounted_secret_keys(docs, role).items(), role
        volume = pod_volumes(docs, role)[PASSWORD_DIR]
        assert volume["secret"]["secretName"] == secret
        assert {i["key"] for i in volume["secret"]["items"]} == set(wanted.values())
    assert not set(mounted_secret_keys(docs, "api").values()) & set(wanted.values())
    assert PASSWORD_DIR not in pod_volumes(docs, "api")
    if secret == FULLNAME:
        data = by_kind(docs, "Secret")[FULLNAME]["data"]
        given = {f"ucwa-password-{i}": p for i, p in GIVEN[variant].items()}
        assert {k: base64.b64decode(v).decode() for k, v in data.items() if k in given} == given
        assert "ucwa-password" not in data
    else:
        assert not by_kind(docs, "Secret")
        assert secret_keys_read(docs, secret) == {
            "api-keys",
            "webhook-secret",
            *wanted.values(),
        }


@pytest.mark.parametrize("variant", sorted(ACCOUNT_VARIANTS))
def test_no_password_outside_the_secret(helm: str, tmp: Path, variant: str) -> None:
    docs = render(helm, tmp, variant)
    rest = repr([d for d in docs if d["kind"] != "Secret"])
    for password in PASSWORDS.values():
        assert password not in rest
        assert base64.b64encode(password.encode()).decode() not in rest
    for entry in accounts_file(docs):
        assert "password" not in entry
    for role in ROLES:
        assert not {"BRIDGE_UCWA_PASSWORD", "BRIDGE_ACCOUNTS"} & set(env_of(docs, role)), role


def test_poller_replicas_stay_as_set(helm: str, tmp: Path) -> None:
    assert deployment(render(helm, tmp, "accounts"), "poller")["spec"]["replicas"] == 2
    assert deployment(render(helm, tmp, "accounts-full"), "poller")["spec"]["replicas"] == 3


def test_accounts_change_rolls_the_pods(helm: str, tmp: Path) -> None:
    one = render(helm, tmp, "accounts")
    other = render(helm, tmp, "accounts-own-discovery")
    for role in ROLES:
        a = deployment(one, role)["spec"]["template"]["metadata"]["annotations"]
        b = deployment(other, role)["spec"]["template"]["metadata"]["annotations"]
        assert a["checksum/config"] != b["checksum/config"], role


@pytest.mark.parametrize("variant", ["defaults", "existing-secret", "full"])
def test_a_single_account_renders_no_accounts_file(helm: str, tmp: Path, variant: str) -> None:
    values, sets = VARIANTS[variant]
    args = ["template", RELEASE, str(CHART), *values_args(values, sets, tmp)]
    docs = load_documents(run_helm(helm, *args).stdout)
    assert f"{FULLNAME}-accounts" not in by_kind(docs, "ConfigMap")
    assert configmap_env(docs)["BRIDGE_UCWA_USERNAME"] == "bot@contoso.com"
    for role in ROLES:
        assert "BRIDGE_ACCOUNTS_FILE" not in env_of(docs, role)
        assert PASSWORD_DIR not in pod_volumes(docs, role)


# ---------------------------------------------------------------------------------------------
# every role starts with what its pod sees
# ---------------------------------------------------------------------------------------------


def pod_filesystem(docs: list[dict[str, Any]], role: str, root: Path) -> None:
    """Write the files of a role's ConfigMap and Secret volumes below ``root`` as the kubelet
    would mount them (Secrets as rendered in ``docs``)."""
    configmaps, secrets = by_kind(docs, "ConfigMap"), by_kind(docs, "Secret")
    for path, volume in pod_volumes(docs, role).items():
        if "configMap" in volume:
            data = configmaps[volume["configMap"]["name"]]["data"]
            files = {i["path"]: data[i["key"]] for i in volume["configMap"].get("items", [])}
            files = files or dict(data)
        elif "secret" in volume:
            data = secrets[volume["secret"]["secretName"]]["data"]
            files = {
                i["path"]: base64.b64decode(data[i["key"]]).decode()
                for i in volume["secret"]["items"]
            }
        else:
            continue
        for name, content in files.items():
            target = root / path.lstrip("/") / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(content, encoding="utf-8")


def rooted(root: Path, path: str) -> str:
    return str(root / path.lstrip("/"))


def start_every_role(docs: list[dict[str, Any]], tmp_path: Path) -> dict[str, Any]:
    """Load each role's settings from its pod's environment and files; the accounts by role."""
    from bridge.config.settings import Settings

    loaded = {}
    for role in ROLES:
        root = tmp_path / role
        pod_filesystem(docs, role, root)
        env = pod_environment(docs, role)
        accounts = Path(rooted(root, env["BRIDGE_ACCOUNTS_FILE"]))
        listing = yaml.safe_load(accounts.read_text(encoding="utf-8"))
        for entry in listing["accounts"]:  # the pod's absolute paths, below root here
            entry["password_file"] = rooted(root, entry["password_file"])
        accounts.write_text(yaml.safe_dump(listing), encoding="utf-8")
        env["BRIDGE_ACCOUNTS_FILE"] = str(accounts)
        loaded[role] = Settings.from_env(role, env).accounts  # type: ignore[arg-type]
    return loaded


def test_every_role_starts_with_its_pod_files(helm: str, tmp: Path, tmp_path: Path) -> None:
    loaded = start_every_role(render(helm, tmp, "accounts"), tmp_path)
    for role in ROLES:
        accounts = loaded[role]
        assert accounts.ids == ("default", "alerts", "hr"), role
        assert accounts.default is not None and accounts.default.id == "default"
    for role in SIGNING_IN:
        assert {a.id: a.password for a in loaded[role]} == PASSWORDS, role
        urls = {a.id: a.discovery_url for a in loaded[role]}
        assert urls == {"default": DISCOVERY_URL, "alerts": DISCOVERY_URL, "hr": HR_DISCOVERY_URL}
    # The api has no password files, and needs none.
    assert {a.password for a in loaded["api"]} == {""}


def test_a_single_listed_account_is_the_default(helm: str, tmp: Path, tmp_path: Path) -> None:
    loaded = start_every_role(render(helm, tmp, "accounts-one"), tmp_path)
    for role in ROLES:
        assert loaded[role].default is not None and loaded[role].default.id == "alerts"


# ---------------------------------------------------------------------------------------------
# refusals
# ---------------------------------------------------------------------------------------------

# Two valid accounts as --set arguments, and their passwords.
ACCOUNT_ARGS = [
    f"image.repository={IMAGE_REPOSITORY}",
    f"config.ucwa.discoveryUrl={DISCOVERY_URL}",
    f"secrets.apiKeys[0]={SENTINEL_API_KEY}",
    "config.ucwa.accounts[0].id=bot",
    "config.ucwa.accounts[0].username=bot@contoso.com",
    "config.ucwa.accounts[0].default=true",
    "config.ucwa.accounts[1].id=alerts",
    "config.ucwa.accounts[1].username=pager@contoso.com",
    "secrets.accountPasswords.bot=bot-password",
    "secrets.accountPasswords.alerts=alerts-password",
]


def template(helm: str, *sets: str) -> Any:
    args = ["template", RELEASE, str(CHART)]
    for item in (*ACCOUNT_ARGS, *sets):
        args += ["--set", item]
    return run_helm(helm, *args, check=False)


def test_the_refusal_cases_start_from_a_valid_render(helm: str) -> None:
    result = template(helm)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (
            ["config.ucwa.username=bot@contoso.com"],
            "config.ucwa.username and config.ucwa.accounts exclude each other",
        ),
        (
            ["config.ucwa.accounts[1].id=bot"],
            'config.ucwa.accounts: two accounts share the id "bot"',
        ),
        (
            ["config.ucwa.accounts[1].username=Bot@Contoso.com"],
            'config.ucwa.accounts: two accounts share the username "Bot@Contoso.com"',
        ),
        (
            ["config.ucwa.accounts[1].default=true"],
            "config.ucwa.accounts: only one account may be default: true (bot, alerts are)",
        ),
        (
            ["config.ucwa.accounts[0].default=false"],
            "config.ucwa.accounts: mark one account default: true",
        ),
        (["config.ucwa.accounts[1].id=Alerts"], "config.ucwa.accounts.1.id: Does not match"),
        (["config.ucwa.accounts[1].id=-alerts"], "config.ucwa.accounts.1.id: Does not match"),
        (["config.ucwa.accounts[1].id=" + "a" * 33], "config.ucwa.accounts.1.id: Does not match"),
        (["config.ucwa.accounts[1].id=pager.alerts"], "config.ucwa.accounts.1.id: Does not match"),
        (["config.ucwa.accounts[1].username=pager x"], "config.ucwa.accounts.1.username"),
        (["config.ucwa.accounts[1].discoveryUrl=lyncdiscover"], "accounts.1.discoveryUrl"),
        (
            ["config.ucwa.accounts[1].password=x"],
            "config.ucwa.accounts.1: Additional property password is not allowed",
        ),
        (
            ["secrets.accountPasswords.alerts="],
            "secrets.accountPasswords.alerts: the password of pager@contoso.com",
        ),
        (
            ["secrets.accountPasswords.pager=x"],
            "secrets.accountPasswords.pager: no account with that id",
        ),
        (["secrets.ucwaPassword=x"], "give each account's under secrets.accountPasswords"),
        (["config.extra.BRIDGE_ACCOUNTS=[]"], "config.extra.BRIDGE_ACCOUNTS: list the accounts"),
        (
            ["config.extra.BRIDGE_ACCOUNTS_FILE=/a.yaml"],
            "config.extra.BRIDGE_ACCOUNTS_FILE: list the accounts",
        ),
        (
            ["secrets.keys.accountPasswordPrefix=", "config.ucwa.accounts[1].id=api-keys"],
            'the password key "api-keys" of account "api-keys" is another secret\'s key',
        ),
    ],
)
def test_bad_account_values_are_refused(helm: str, sets: list[str], message: str) -> None:
    result = template(helm, *sets)
    assert result.returncode != 0, f"accepted: {sets}"
    assert message in result.stderr, result.stderr


def test_account_passwords_need_accounts(helm: str) -> None:
    args = ["template", RELEASE, str(CHART), *REQUIRED_ARGS]
    result = run_helm(helm, *args, "--set", "secrets.accountPasswords.bot=x", check=False)
    assert result.returncode != 0
    assert "secrets.accountPasswords needs config.ucwa.accounts" in result.stderr


def test_missing_account_values_are_each_named(helm: str) -> None:
    result = template(
        helm,
        "config.ucwa.discoveryUrl=",
        f"config.ucwa.accounts[1].discoveryUrl={HR_DISCOVERY_URL}",
        "secrets.accountPasswords.bot=",
        "secrets.accountPasswords.alerts=",
    )
    assert missing_values(result) == [
        "config.ucwa.discoveryUrl",
        "secrets.accountPasswords.bot",
        "secrets.accountPasswords.alerts",
    ]
    assert "accounts without a discoveryUrl (bot)" in result.stderr
    assert "or secrets.existingSecret with the key ucwa-password-alerts" in result.stderr
    # With existingSecret the chart cannot see the passwords: nothing is missing.
    ok = template(
        helm, "secrets.existingSecret=bridge-credentials", "secrets.accountPasswords.bot="
    )
    assert ok.returncode == 0, ok.stderr


def test_password_key_prefix_is_configurable(helm: str) -> None:
    result = template(helm, "secrets.keys.accountPasswordPrefix=skype-")
    docs = load_documents(result.stdout)
    assert {"skype-bot", "skype-alerts"} <= set(by_kind(docs, "Secret")[FULLNAME]["data"])
    for role in SIGNING_IN:
        assert set(mounted_secret_keys(docs, role).values()) == {"skype-bot", "skype-alerts"}


def test_notes_name_the_accounts_and_their_keys(helm: str, tmp_path: Path) -> None:
    # helm template does not print NOTES.txt; render it through a template in a copy of the chart.
    chart = tmp_path / "chart"
    shutil.copytree(CHART, chart)
    (chart / "templates" / "NOTES.txt").rename(chart / "notes.tpl")
    (chart / "templates" / "notes-probe.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: notes\ndata:\n  notes: |\n"
        '{{- tpl (.Files.Get "notes.tpl") . | nindent 4 }}\n'
    )
    values = values_args(ACCOUNT_VARIANTS["accounts-existing-secret"], [], tmp_path)
    args = ["template", RELEASE, str(chart), "--show-only", "templates/notes-probe.yaml", *values]
    notes = load_documents(run_helm(helm, *args).stdout)[0]["data"]["notes"]
    assert "2 poller (3 accounts spread over them" in notes
    assert "ucwa-password-default, ucwa-password-alerts, ucwa-password-hr (worker, poller)" in notes


# ---------------------------------------------------------------------------------------------
# the README's "Several accounts", followed literally
# ---------------------------------------------------------------------------------------------


SHELL_VARIABLE = re.compile(r"\$\{?(\w+)\}?")


def shell_value(match: re.Match[str]) -> str:
    return f"{match.group(1).lower()}-0123456789abcdef"


def readme_accounts_section() -> str:
    section = readme_helm_section()
    return section[section.index("#### Several accounts") :]


def readme_block(section: str, language: str) -> str:
    return section.split(f"```{language}\n", 1)[1].split("```", 1)[0]


def test_readme_accounts_commands_render_with_the_secret_they_create(
    helm: str, tmp_path: Path
) -> None:
    section = readme_accounts_section()
    values_file = tmp_path / "accounts.yaml"
    values_file.write_text(readme_block(section, "yaml"), encoding="utf-8")
    lines = readme_block(section, "sh").replace("\\\n", " ").splitlines()
    commands = [shlex.split(line, comments=True) for line in lines if line.strip()]
    create = next(c for c in commands if c[:1] == ["kubectl"] and "generic" in c)
    secret = create[create.index("generic") + 1]
    literals = dict(a.split("=", 2)[1:] for a in create if a.startswith("--from-literal="))
    install = next(c for c in commands if c[:2] == ["helm", "install"])
    assert install[install.index("--values") + 1] == values_file.name
    assert create[create.index("--namespace") + 1] == install[install.index("--namespace") + 1]
    # Rendered as release RELEASE (install[2] names only the objects) for the helpers here.
    args = ["template", RELEASE, str(CHART), "--values", str(values_file)]
    args += ["--namespace", install[install.index("--namespace") + 1]]
    for index, word in enumerate(install):
        if word == "--set":
            args += ["--set", install[index + 1]]
    docs = load_documents(run_helm(helm, *args).stdout)
    # The Secret the README creates is the one the chart reads, with exactly the keys it reads.
    assert not by_kind(docs, "Secret")
    assert secret_keys_read(docs, secret) == set(literals)
    ids = [a["id"] for a in yaml.safe_load(values_file.read_text())["config"]["ucwa"]["accounts"]]
    assert {f"ucwa-password-{i}" for i in ids} <= set(literals)
    # And every role starts with that Secret, its shell variables given values.
    data = {
        key: base64.b64encode(SHELL_VARIABLE.sub(shell_value, value).encode()).decode()
        for key, value in literals.items()
    }
    docs.append({"kind": "Secret", "metadata": {"name": secret}, "data": data})
    loaded = start_every_role(docs, tmp_path)
    assert loaded["worker"].ids == tuple(ids)
