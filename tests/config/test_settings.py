"""Settings.from_env: one-line errors naming the variable, roles, and secret-free reprs."""

from __future__ import annotations

import subprocess
import sys

import pytest

from bridge.config.settings import CONFIG_EXIT_CODE, ConfigError, Scope, Settings

KEY = "a-long-api-key-0123456789"
UCWA = {
    "BRIDGE_UCWA_DISCOVERY_URL": "https://lyncdiscover.contoso.com/",
    "BRIDGE_UCWA_USERNAME": "bot@contoso.com",
    "BRIDGE_UCWA_PASSWORD": "hunter2-password",
}
BASE = {"BRIDGE_REDIS_URL": "redis://localhost:6379/0", "BRIDGE_API_KEYS": KEY}


def error_for(role: str, env: dict[str, str]) -> str:
    """The first of the error's lines (one per variable, none spanning two)."""
    with pytest.raises(ConfigError) as caught:
        Settings.from_env(role, env)  # type: ignore[arg-type]
    lines = caught.value.lines
    assert str(caught.value) == "\n".join(lines)
    assert all("\n" not in line for line in lines)
    assert len({line.split(":")[0] for line in lines}) == len(lines)
    return lines[0]


@pytest.mark.parametrize(
    ("role", "env", "variable"),
    [
        ("api", {"BRIDGE_API_KEYS": KEY}, "BRIDGE_REDIS_URL"),
        ("api", {**BASE, "BRIDGE_REDIS_URL": "  "}, "BRIDGE_REDIS_URL"),
        ("api", {**BASE, "BRIDGE_REDIS_URL": "http://x"}, "BRIDGE_REDIS_URL"),
        ("api", {"BRIDGE_REDIS_URL": "redis://r"}, "BRIDGE_API_KEYS"),
        ("api", {**BASE, "BRIDGE_API_KEYS": "short"}, "BRIDGE_API_KEYS"),
        ("api", {**BASE, "BRIDGE_API_KEYS": f"{KEY}:admin"}, "BRIDGE_API_KEYS"),
        ("api", {**BASE, "BRIDGE_API_KEYS": f"{KEY},read"}, "BRIDGE_API_KEYS"),
        ("api", {**BASE, "BRIDGE_API_KEYS": f"{KEY},{KEY}"}, "BRIDGE_API_KEYS"),
        ("api", {**BASE, "BRIDGE_AUTH_DISABLED": "maybe"}, "BRIDGE_AUTH_DISABLED"),
        ("api", {**BASE, "BRIDGE_MAX_BODY_BYTES": "lots"}, "BRIDGE_MAX_BODY_BYTES"),
        ("api", {**BASE, "BRIDGE_MAX_MESSAGE_CHARS": "0"}, "BRIDGE_MAX_MESSAGE_CHARS"),
        ("api", {**BASE, "BRIDGE_DEFAULT_VALIDITY_S": "-5"}, "BRIDGE_DEFAULT_VALIDITY_S"),
        ("api", {**BASE, "BRIDGE_DEFAULT_VALIDITY_S": "999999"}, "BRIDGE_DEFAULT_VALIDITY_S"),
        ("api", {**BASE, "BRIDGE_IDEMPOTENCY_TTL_S": "1.5"}, "BRIDGE_IDEMPOTENCY_TTL_S"),
        ("worker", {**BASE, **UCWA, "BRIDGE_UCWA_PASSWORD": ""}, "BRIDGE_UCWA_PASSWORD"),
        ("poller", {**BASE, **UCWA, "BRIDGE_UCWA_USERNAME": ""}, "BRIDGE_UCWA_USERNAME"),
        ("worker", {"BRIDGE_REDIS_URL": "redis://r"}, "BRIDGE_UCWA_DISCOVERY_URL"),
        ("poller", {**BASE, **UCWA, "BRIDGE_UCWA_DISCOVERY_URL": "ftp://x"},
         "BRIDGE_UCWA_DISCOVERY_URL"),
    ],
)  # fmt: skip
def test_errors_name_the_variable(role: str, env: dict[str, str], variable: str) -> None:
    assert error_for(role, env).startswith(f"{variable}: ")


def test_every_fault_is_named_at_once() -> None:
    env = {
        "BRIDGE_REDIS_URL": "http://x",
        "BRIDGE_UCWA_TIMEOUT_S": "soon",
        "BRIDGE_UCWA_PASSWORD": "hunter2-password",
        "BRIDGE_MAX_ATTEMPT": "3",
    }
    with pytest.raises(ConfigError) as caught:
        Settings.from_env("worker", env)
    assert [variable for variable, _ in caught.value.problems] == [
        "BRIDGE_REDIS_URL",
        "BRIDGE_UCWA_DISCOVERY_URL",
        "BRIDGE_UCWA_USERNAME",
        "BRIDGE_UCWA_TIMEOUT_S",
        "BRIDGE_MAX_ATTEMPT",
    ]
    assert caught.value.variable == "BRIDGE_REDIS_URL"
    assert caught.value.lines[-1] == (
        "BRIDGE_MAX_ATTEMPT: unknown variable; did you mean BRIDGE_MAX_ATTEMPTS?"
    )
    assert "hunter2" not in str(caught.value)


@pytest.mark.parametrize(
    ("keys", "problem"),
    [
        (f"{KEY}:admin", "entry 1 has unknown scope 'admin' (known: send, read)"),
        (f"{KEY}:send,admin", "entry 1 has unknown scope 'admin' (known: send, read)"),
        (f"{KEY}:sned", "entry 1 has unknown scope 'sned' (known: send, read); did you mean send?"),
        (f"{KEY},read", "scope 'read' does not follow a 'key:scope' entry"),
        ("short", "entry 1 is shorter than 16 characters"),
    ],
)
def test_an_unknown_scope_is_named_as_such(keys: str, problem: str) -> None:
    assert error_for("api", {**BASE, "BRIDGE_API_KEYS": keys}) == f"BRIDGE_API_KEYS: {problem}"


def test_values_that_must_agree() -> None:
    env = {**BASE, "BRIDGE_IDEMPOTENCY_TTL_S": "60", "BRIDGE_IDEMPOTENCY_LOCK_TTL_S": "61"}
    assert error_for("api", env) == (
        "BRIDGE_IDEMPOTENCY_LOCK_TTL_S: must be at most BRIDGE_IDEMPOTENCY_TTL_S (60)"
    )
    auth_off = {"BRIDGE_REDIS_URL": "redis://r", "BRIDGE_AUTH_DISABLED": "true"}
    assert error_for("api", {**auth_off, "BRIDGE_RATE_LIMIT_KEYS": "0123456789abcdef=1/s"}) == (
        "BRIDGE_RATE_LIMIT_KEYS: '0123456789abcdef' is not the key id of a configured API key"
    )


def test_service_links_are_not_unknown_names() -> None:
    links = {
        "BRIDGE_REDIS_SERVICE_HOST": "10.0.0.7",
        "BRIDGE_REDIS_SERVICE_PORT": "6379",
        "BRIDGE_REDIS_PORT": "tcp://10.0.0.7:6379",
        "BRIDGE_REDIS_PORT_6379_TCP_ADDR": "10.0.0.7",
    }
    assert Settings.from_env("api", {**BASE, **links}).redis_url == BASE["BRIDGE_REDIS_URL"]
    assert error_for("api", {**BASE, "BRIDGE_METRIC_PORT": "9100"}) == (
        "BRIDGE_METRIC_PORT: unknown variable; did you mean BRIDGE_METRICS_PORT?"
    )


def test_api_needs_no_ucwa_credentials() -> None:
    settings = Settings.from_env("api", BASE)
    assert settings.ucwa_password is None
    assert settings.api_keys[0].scopes == frozenset(Scope)


def test_worker_needs_no_api_keys() -> None:
    settings = Settings.from_env("worker", {"BRIDGE_REDIS_URL": "redis://r", **UCWA})
    assert settings.api_keys == () and settings.ucwa_username == "bot@contoso.com"


def test_auth_disabled_needs_no_keys() -> None:
    settings = Settings.from_env(
        "api", {"BRIDGE_REDIS_URL": "redis://r", "BRIDGE_AUTH_DISABLED": "true"}
    )
    assert settings.auth_disabled and settings.api_keys == ()


def test_scoped_keys() -> None:
    other = "another-key-0123456789"
    env = {**BASE, "BRIDGE_API_KEYS": f"{KEY}:send, read ,{other}:read"}
    keys = Settings.from_env("api", env).api_keys
    assert [k.scopes for k in keys] == [frozenset(Scope), frozenset({Scope.READ})]


def test_defaults_and_overrides() -> None:
    settings = Settings.from_env("api", {**BASE, "BRIDGE_MAX_BODY_BYTES": "1024"})
    assert settings.max_body_bytes == 1024
    assert settings.idempotency_ttl_s == 86_400
    assert settings.default_validity_s > 0


def test_secrets_are_absent_from_repr_and_errors() -> None:
    env = {**BASE, **UCWA, "BRIDGE_REDIS_URL": "redis://:redispass@r:6379/0"}
    settings = Settings.from_env("demo", env)

    for text in (repr(settings), str(settings), repr(settings.api_keys)):
        assert KEY not in text
        assert "hunter2-password" not in text
        assert "redispass" not in text
    assert "redis://:***@r:6379/0" in repr(settings)
    assert KEY not in error_for("api", {**BASE, "BRIDGE_API_KEYS": f"{KEY}:admin"})


def test_settings_are_frozen() -> None:
    settings = Settings.from_env("api", BASE)
    with pytest.raises(AttributeError):
        settings.redis_url = "redis://elsewhere"  # type: ignore[misc]


def test_wsgi_exits_78_with_one_line_per_bad_variable() -> None:
    result = subprocess.run(
        [sys.executable, "-c", "import bridge.api.wsgi as w; w.app"],
        env={"PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == CONFIG_EXIT_CODE
    assert result.stderr.strip().splitlines() == [
        "configuration error: BRIDGE_REDIS_URL: is required (Redis with persistence and "
        "noeviction)",
        "configuration error: BRIDGE_API_KEYS: is required (comma-separated keys of 16+ "
        "characters)",
    ]


def test_a_value_that_is_not_utf8_is_refused_by_name_at_start_up() -> None:
    # ``os.environ`` turns bytes that are not UTF-8 into lone surrogates (surrogateescape)
    import os

    raw = os.fsdecode(b"pass\xff\xfeword")
    env = {**BASE, **UCWA, "BRIDGE_UCWA_PASSWORD": raw}
    message = error_for("worker", env)
    assert message.startswith("BRIDGE_UCWA_PASSWORD") and "UTF-8" in message
    assert raw not in message
    result = subprocess.run(
        [sys.executable, "-m", "bridge.cli", "worker"],
        env={**{k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}, **env},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == CONFIG_EXIT_CODE
    assert "BRIDGE_UCWA_PASSWORD" in result.stderr and "Traceback" not in result.stderr
