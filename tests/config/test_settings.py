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
    with pytest.raises(ConfigError) as caught:
        Settings.from_env(role, env)  # type: ignore[arg-type]
    message = str(caught.value)
    assert "\n" not in message
    return message


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


def test_wsgi_exits_78_with_one_line_on_bad_config() -> None:
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
        "configuration error: BRIDGE_REDIS_URL: is required (e.g. redis://localhost:6379/0)"
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
