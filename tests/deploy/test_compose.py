"""docker-compose.yml: valid per the vendored Compose Specification schema, and what it promises.

No Docker engine is needed: the file is loaded with PyYAML (which resolves the ``<<`` merge
keys as Compose does), validated against ``deploy/compose-spec.json``, and interpolated with
``.env.example`` by a small implementation of Compose's ``${VAR:-default}`` rules.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from tests.deploy.conftest import COMPOSE_FILE, COMPOSE_SCHEMA, ENV_EXAMPLE, ROOT, import_or_missing

BRIDGE_SERVICES = ("api", "worker", "poller")
JSONSCHEMA_HINT = "pip install jsonschema (the project's test extra)"
# ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?error}, ${NAME?error}, ${NAME:+alt}, $NAME
VARIABLE = re.compile(
    r"\$(?:\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?P<op>:?[-?+])?(?P<arg>[^}]*)\}"
    r"|(?P<plain>[A-Za-z_][A-Za-z0-9_]*))"
)


def raw_text() -> str:
    return COMPOSE_FILE.read_text(encoding="utf-8")


def load_compose() -> dict[str, Any]:
    return yaml.safe_load(raw_text())


def parse_env_file(path: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, value = line.partition("=")
        assert sep, f"{path.name}:{number}: not NAME=value"
        assert re.fullmatch(r"[A-Z_][A-Z0-9_]*", name), f"{path.name}:{number}: bad name {name!r}"
        assert name not in values, f"{path.name}:{number}: {name} is set twice"
        values[name] = value
    return values


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's interpolation (enough of it for this file); $$ is a literal $."""

    def substitute(match: re.Match[str]) -> str:
        name = match.group("braced") or match.group("plain")
        op, arg = match.group("op"), match.group("arg") or ""
        value = env.get(name)
        if op in (":-", "-"):
            unset = value is None or (op == ":-" and value == "")
            return arg if unset else str(value)
        if op in (":?", "?"):
            if value is None or (op == ":?" and value == ""):
                raise KeyError(f"{name} is required: {arg}")
            return value
        if op in (":+", "+"):
            return arg if value else ""
        return value or ""

    return "$".join(VARIABLE.sub(substitute, part) for part in text.split("$$"))


def interpolate_tree(node: Any, env: dict[str, str]) -> Any:
    """Like Compose: interpolate the string values of the parsed file, so types stay strings."""
    if isinstance(node, dict):
        return {key: interpolate_tree(value, env) for key, value in node.items()}
    if isinstance(node, list):
        return [interpolate_tree(item, env) for item in node]
    return interpolate(node, env) if isinstance(node, str) else node


def interpolated(env: dict[str, str] | None = None) -> dict[str, Any]:
    return interpolate_tree(load_compose(), parse_env_file(ENV_EXAMPLE) if env is None else env)


def variables_in(text: str) -> set[str]:
    text = text.replace("$$", "")
    return {m.group("braced") or m.group("plain") for m in VARIABLE.finditer(text)}


def env_list_to_dict(environment: Any) -> dict[str, str]:
    if isinstance(environment, dict):
        return {k: "" if v is None else str(v) for k, v in environment.items()}
    return dict(item.partition("=")[::2] for item in environment or [])


# ---------------------------------------------------------------------------------------------
# schema
# ---------------------------------------------------------------------------------------------


def compose_validator() -> Any:
    jsonschema = import_or_missing("jsonschema", JSONSCHEMA_HINT)
    schema = json.loads(COMPOSE_SCHEMA.read_text(encoding="utf-8"))
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def test_compose_file_matches_the_compose_spec_schema() -> None:
    validator = compose_validator()
    errors = [
        f"{'.'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}"
        for e in validator.iter_errors(load_compose())
    ]
    assert not errors, "\n".join(errors)


def test_interpolated_compose_file_matches_the_schema() -> None:
    validator = compose_validator()
    errors = [e.message for e in validator.iter_errors(interpolated())]
    assert not errors, "\n".join(errors)


def test_schema_check_is_not_vacuous() -> None:
    validator = compose_validator()
    doc = load_compose()
    doc["services"]["api"]["restart_policy"] = "always"  # not a service key
    doc["services"]["worker"]["depends_on"]["redis"]["condition"] = "service_ready"
    assert len(list(validator.iter_errors(doc))) >= 2


# ---------------------------------------------------------------------------------------------
# structure
# ---------------------------------------------------------------------------------------------


def test_bridge_services_wait_for_a_healthy_redis() -> None:
    services = load_compose()["services"]
    for name in BRIDGE_SERVICES:
        assert services[name]["depends_on"]["redis"]["condition"] == "service_healthy", name
        assert "profiles" not in services[name], f"{name} must run without a profile"


def test_redis_is_durable_and_never_evicts() -> None:
    redis = interpolated()["services"]["redis"]
    command = redis["command"]
    assert command[0] == "redis-server"
    flags = dict(zip(command[1::2], command[2::2], strict=True))
    assert flags["--appendonly"] == "yes"
    assert flags["--appendfsync"] in ("everysec", "always")
    assert flags["--maxmemory-policy"] == "noeviction"
    assert redis["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]
    assert any(v.endswith(":/data") for v in redis["volumes"])
    assert redis["volumes"][0].split(":")[0] in load_compose()["volumes"]


def test_poller_runs_two_replicas() -> None:
    services = load_compose()["services"]
    pollers = [s for s in services.values() if s.get("command") == ["poller"]]
    replicas = sum(s.get("deploy", {}).get("replicas", 1) for s in pollers)
    assert replicas == 2
    assert all("container_name" not in s for s in pollers)


def test_roles_commands_healthchecks_and_shutdown() -> None:
    services = load_compose()["services"]
    assert services["api"]["command"] == ["api", "--bind", "0.0.0.0:8080"]
    assert services["worker"]["command"] == ["worker"]
    assert "/healthz" in " ".join(services["api"]["healthcheck"]["test"])
    for role in ("worker", "poller"):
        assert services[role]["healthcheck"]["test"] == ["CMD", "ucwa-bridge", "health", role]
    images = {services[name]["image"] for name in BRIDGE_SERVICES}
    assert len(images) == 1, "one image for every role"
    for name in BRIDGE_SERVICES:
        service = services[name]
        assert service["build"]["context"] == "."
        # the worker finishes its job on SIGTERM: longer than the send job timeout
        grace = "150s" if name == "worker" else "30s"
        assert service["stop_grace_period"] == grace
        assert service.get("stop_signal", "SIGTERM") == "SIGTERM"
        assert service["read_only"] is True
        assert "/tmp" in service["tmpfs"]


def test_api_metrics_dir_is_a_tmpfs() -> None:
    api = load_compose()["services"]["api"]
    directory = api["environment"]["PROMETHEUS_MULTIPROC_DIR"]
    assert directory in api["tmpfs"]
    assert "PROMETHEUS_MULTIPROC_DIR" not in load_compose()["services"]["worker"]["environment"]


def test_bridge_environment_passes_the_contract_variables() -> None:
    services = load_compose()["services"]
    contract = {
        "BRIDGE_REDIS_URL",
        "BRIDGE_UCWA_DISCOVERY_URL",
        "BRIDGE_UCWA_USERNAME",
        "BRIDGE_UCWA_PASSWORD",
        "BRIDGE_API_KEYS",
        "BRIDGE_WEBHOOK_URL",
        "BRIDGE_WEBHOOK_SECRET",
        "BRIDGE_WEBHOOKS",
        "BRIDGE_WEBHOOK_ALLOW_PRIVATE",
        "BRIDGE_LOG_LEVEL",
    }
    for name in BRIDGE_SERVICES:
        assert contract <= set(env_list_to_dict(services[name]["environment"])), name
    assert "BRIDGE_API_WORKERS" in services["api"]["environment"]


def test_secrets_have_no_default_in_the_compose_file() -> None:
    text = raw_text()
    for name in ("BRIDGE_UCWA_PASSWORD", "BRIDGE_API_KEYS"):
        uses = re.findall(r"\$\{" + name + r"(:?[-?+])?", text)
        assert uses and all(op in (":?", "?") for op in uses), name
    with pytest.raises(KeyError, match="is required: set BRIDGE_"):
        interpolated({})


def test_demo_profile_runs_the_simulator_and_a_webhook_receiver() -> None:
    services = interpolated()["services"]
    demo = {name for name, s in services.items() if "demo" in s.get("profiles", [])}
    assert demo == {"ucwasim", "webhook-receiver"}
    sim = services["ucwasim"]
    assert sim["entrypoint"] == ["python", "-m", "ucwasim"]
    assert sim["image"] == services["api"]["image"]
    receiver = services["webhook-receiver"]
    mounted = receiver["volumes"][0].split(":")
    assert (ROOT / mounted[0]).is_file()
    assert receiver["entrypoint"] == ["python", mounted[1]]
    assert {"rq-dashboard"} == {
        name for name, s in services.items() if "dashboard" in s.get("profiles", [])
    }


def test_demo_configuration_is_consistent() -> None:
    """With .env.example, the bridge signs in to the simulator and posts to the receiver."""
    from ucwasim.cli import build_parser, load_config

    services = interpolated()["services"]
    env = env_list_to_dict(services["worker"]["environment"])
    args = build_parser().parse_args(services["ucwasim"]["command"])
    config = load_config(args)
    users = {u.sip: u for u in config.users}
    bot = users["sip:" + env["BRIDGE_UCWA_USERNAME"].removeprefix("sip:")]
    assert bot.password == env["BRIDGE_UCWA_PASSWORD"]
    assert any(u.behaviour == "echo" for u in config.users), "the demo needs someone who answers"
    discovery = urlsplit(env["BRIDGE_UCWA_DISCOVERY_URL"])
    # The simulator writes its public URL into absolute links: it must be the service name.
    public = urlsplit(args.public_url)
    assert (discovery.hostname, discovery.port) == (public.hostname, public.port)
    assert (public.hostname, public.port, args.port) == ("ucwasim", 8090, 8090)
    assert services["ucwasim"].get("hostname", "ucwasim") == "ucwasim"
    assert f"originalDomain={config.domain}" in discovery.query
    webhook = urlsplit(env["BRIDGE_WEBHOOK_URL"])
    receiver_args = services["webhook-receiver"]["command"]
    assert webhook.hostname == "webhook-receiver"
    assert str(webhook.port) == receiver_args[receiver_args.index("--port") + 1]
    assert env["BRIDGE_WEBHOOK_ALLOW_PRIVATE"] == "true"
    receiver_env = env_list_to_dict(services["webhook-receiver"]["environment"])
    assert receiver_env["WEBHOOK_SECRET"] == env["BRIDGE_WEBHOOK_SECRET"]


def test_env_example_is_a_valid_bridge_configuration() -> None:
    from bridge.config.settings import Settings
    from bridge.webhooks.endpoints import load_endpoints
    from bridge.webhooks.settings import WebhookSettings

    services = interpolated()["services"]
    for role in BRIDGE_SERVICES:
        env = env_list_to_dict(services[role]["environment"])
        Settings.from_env(role, env)  # type: ignore[arg-type]
        WebhookSettings.from_env(env)
        endpoints = load_endpoints(env)
        assert [e.url for e in endpoints] == [env["BRIDGE_WEBHOOK_URL"]]


# ---------------------------------------------------------------------------------------------
# .env.example
# ---------------------------------------------------------------------------------------------


def test_env_example_documents_every_interpolated_variable() -> None:
    used = variables_in(raw_text())
    documented = set(parse_env_file(ENV_EXAMPLE))
    assert sorted(used - documented) == [], "interpolated but missing from .env.example"
    assert sorted(documented - used) == [], "in .env.example but not used by the compose file"


def test_env_example_explains_each_variable() -> None:
    lines = ENV_EXAMPLE.read_text(encoding="utf-8").splitlines()
    for index, line in enumerate(lines):
        if line and not line.startswith("#"):
            block = lines[:index]
            comment_above = next(
                (ln for ln in reversed(block) if ln.startswith("#") or "=" not in ln), ""
            )
            assert comment_above.startswith("#"), f"no comment above {line.partition('=')[0]}"


def test_interpolation_helper() -> None:
    env = {"SET": "x", "EMPTY": ""}
    assert interpolate("${SET:-d} ${EMPTY:-d} ${EMPTY-d} ${UNSET-d} $SET $$SET", env) == (
        "x d  d x $SET"
    )
    with pytest.raises(KeyError):
        interpolate("${EMPTY:?needed}", env)
    assert variables_in("${A:-x} $B $${C} ${D:?e}") == {"A", "B", "D"}


# ---------------------------------------------------------------------------------------------
# what the host sees: published ports, pinned images
# ---------------------------------------------------------------------------------------------

# The two secrets the file refuses to start without, and nothing else: every default applies.
ONLY_SECRETS = {
    "BRIDGE_UCWA_PASSWORD": "a-password-for-the-test",
    "BRIDGE_API_KEYS": "an-api-key-for-the-test-0123",
}


def published_ports(service: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(host address, host port, container port) of each published port; "" when not given.

    Compose's short syntax is ``[HOST:][HOST_PORT:]CONTAINER_PORT``; the long one a mapping."""
    ports: list[tuple[str, str, str]] = []
    for port in service.get("ports", []):
        if isinstance(port, dict):
            host, published, target = (
                port.get("host_ip", ""),
                port.get("published", ""),
                port["target"],
            )
        else:
            host, published, target = ["", "", *str(port).rsplit(":", 2)][-3:]
        ports.append((str(host), str(published), str(target)))
    return ports


@pytest.mark.parametrize("env", ["defaults", ".env.example"])
def test_ports_are_published_on_loopback_only(env: str) -> None:
    values = ONLY_SECRETS if env == "defaults" else parse_env_file(ENV_EXAMPLE)
    services = interpolated(values)["services"]
    published = {name: published_ports(s) for name, s in services.items() if s.get("ports")}
    assert {"api", "worker", "poller", "ucwasim", "webhook-receiver", "rq-dashboard"} <= set(
        published
    )
    for name, ports in published.items():
        for address, _, target in ports:
            assert address == "127.0.0.1", f"{name}: port {target} published on {address or 'all'}"
    assert published["api"] == [("127.0.0.1", "8080", "8080")]


def test_publish_address_opens_only_the_api_and_the_demo_services() -> None:
    services = interpolated({**ONLY_SECRETS, "PUBLISH_ADDRESS": "0.0.0.0"})["services"]
    for name in ("api", "ucwasim", "webhook-receiver"):
        assert published_ports(services[name])[0][0] == "0.0.0.0", name
    # No authentication in front of these: never beyond this machine.
    for name in ("worker", "poller", "rq-dashboard"):
        assert {address for address, _, _ in published_ports(services[name])} == {"127.0.0.1"}


def test_port_parser() -> None:
    assert published_ports({"ports": ["8080:80", "127.0.0.1::9100", "9000"]}) == [
        ("", "8080", "80"),
        ("127.0.0.1", "", "9100"),
        ("", "", "9000"),
    ]
    assert published_ports({"ports": [{"target": 80, "published": 8080, "host_ip": "::1"}]}) == [
        ("::1", "8080", "80")
    ]


@pytest.mark.parametrize("env", ["defaults", ".env.example"])
def test_every_image_is_pinned_to_a_release(env: str) -> None:
    values = ONLY_SECRETS if env == "defaults" else parse_env_file(ENV_EXAMPLE)
    services = interpolated(values)["services"]
    bridge_image = services["api"]["image"]
    for name, service in services.items():
        image = service["image"]
        if image == bridge_image:
            assert "build" in service, f"{name}: the bridge image is built from the Dockerfile"
            continue
        reference, _, tag = image.rpartition(":")
        assert reference and "/" not in tag, f"{name}: {image} has no tag"
        assert tag != "latest" and re.fullmatch(r"\d+(\.\d+)+(-[a-z0-9]+)?", tag), (name, image)
    assert services["rq-dashboard"]["image"].startswith("cjlapao/rq-dashboard:")
