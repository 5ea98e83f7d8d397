"""BRIDGE_REDIS_URL forms: plain URLs and redis+sentinel:// URLs, parsed without I/O."""

from __future__ import annotations

import pytest

from bridge.config.redis_conn import RedisUrlError, SentinelUrl, parse_sentinel_url
from bridge.config.settings import ConfigError, Settings


def test_hosts_master_db_and_password() -> None:
    spec = parse_sentinel_url("redis+sentinel://:s%40cret@s1:26379,s2:26380,[::1]:26381/main/2")
    assert spec == SentinelUrl(
        (("s1", 26379), ("s2", 26380), ("::1", 26381)), "main", 2, None, "s@cret"
    )
    assert "s@cret" not in repr(spec)


def test_defaults_port_and_db() -> None:
    spec = parse_sentinel_url("redis+sentinel://sentinel.redis.svc/mymaster")
    assert spec.hosts == (("sentinel.redis.svc", 26379),) and spec.db == 0
    assert spec.password is None and spec.username is None


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("redis+sentinel:///mymaster", "at least one host"),
        ("redis+sentinel://s1:26379", "master-name"),
        ("redis+sentinel://s1:26379/m/x", "database must be a number"),
        ("redis+sentinel://s1:26379/m/0/extra", "master-name"),
        ("redis+sentinel://s1:port/m", "host:port"),
    ],
)
def test_malformed_urls_say_what_is_wrong(url: str, words: str) -> None:
    with pytest.raises(RedisUrlError, match=words):
        parse_sentinel_url(url)


def test_settings_accept_sentinel_urls_and_name_the_variable_otherwise() -> None:
    env = {"BRIDGE_API_KEYS": "k" * 16}
    url = "redis+sentinel://:pw-secret-1@s1:26379/mymaster/1"
    settings = Settings.from_env("api", {**env, "BRIDGE_REDIS_URL": url})
    assert settings.redis_url == url and "pw-secret-1" not in repr(settings)
    with pytest.raises(ConfigError) as caught:
        Settings.from_env("api", {**env, "BRIDGE_REDIS_URL": "redis+sentinel://s1/"})
    assert "BRIDGE_REDIS_URL" in str(caught.value) and "master-name" in str(caught.value)
    with pytest.raises(ConfigError, match="redis\\+sentinel://"):
        Settings.from_env("api", {**env, "BRIDGE_REDIS_URL": "http://x"})
