"""Accounts as configuration: BRIDGE_ACCOUNTS, BRIDGE_ACCOUNTS_FILE, or the single account."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.config.accounts import AccountsError, load_accounts
from bridge.config.settings import ConfigError, Settings
from bridge.config.values import parse_api_keys

URL = "https://lyncdiscover.contoso.com"
BOT = {"id": "bot", "username": "bot@contoso.com", "password": "pw-bot", "default": True}
ALERTS = {"id": "alerts", "username": "Alerts@contoso.com", "password": "pw-alerts"}


def accounts_env(*entries: dict[str, Any], **more: str) -> dict[str, str]:
    return {"BRIDGE_ACCOUNTS": json.dumps(list(entries)), "BRIDGE_UCWA_DISCOVERY_URL": URL, **more}


def problem(env: dict[str, str], need_passwords: bool = True) -> str:
    with pytest.raises(AccountsError) as caught:
        load_accounts(env, need_passwords)
    return str(caught.value)


def test_the_single_account_variables_make_one_account_named_default() -> None:
    accounts = load_accounts(
        {
            "BRIDGE_UCWA_USERNAME": "Bot@Contoso.com",
            "BRIDGE_UCWA_PASSWORD": "pw",
            "BRIDGE_UCWA_DISCOVERY_URL": URL,
        }
    )
    assert accounts.ids == ("default",)
    default = accounts.default
    assert default is not None and default.id == "default" and default.default
    # Its Redis state keeps the name it had before there were accounts: the username.
    assert default.key == "bot@contoso.com"
    assert not load_accounts({})


def test_a_list_of_accounts_with_one_default_and_a_shared_discovery_url() -> None:
    accounts = load_accounts(
        accounts_env(BOT, {**ALERTS, "discovery_url": "https://other.example"})
    )
    assert accounts.ids == ("bot", "alerts")
    assert accounts.default is not None and accounts.default.id == "bot"
    bot, alerts = accounts
    assert bot.discovery_url == URL and alerts.discovery_url == "https://other.example"
    assert alerts.key == "alerts@contoso.com"
    assert accounts.get("alerts") is alerts and accounts.get(None) is bot
    assert accounts.get("nobody") is None


def test_one_account_alone_is_the_default_without_saying_so() -> None:
    accounts = load_accounts(accounts_env({**BOT, "default": False}))
    assert accounts.default is not None and accounts.default.id == "bot"


def test_a_yaml_file_with_a_password_file(tmp_path: Path) -> None:
    secret = tmp_path / "alerts.password"
    secret.write_text("from-a-file\n", encoding="utf-8")
    path = tmp_path / "accounts.yaml"
    path.write_text(
        "accounts:\n"
        "  - {id: bot, username: bot@contoso.com, password: pw, default: true}\n"
        f"  - id: alerts\n    username: alerts@contoso.com\n    password_file: {secret}\n",
        encoding="utf-8",
    )
    accounts = load_accounts({"BRIDGE_ACCOUNTS_FILE": str(path), "BRIDGE_UCWA_DISCOVERY_URL": URL})
    alerts = accounts.get("alerts")
    assert alerts is not None and alerts.password == "from-a-file"


@pytest.mark.parametrize(
    ("entries", "words"),
    [
        ([{**BOT, "id": "Bot"}], "[0] (Bot).id: must be 1 to 32 lowercase"),
        ([BOT, {**ALERTS, "colour": "red"}], "[1] (alerts).colour: unknown field"),
        ([BOT, {**ALERTS, "password_file": "/x"}], "[1] (alerts): give one of password"),
        ([BOT, {k: v for k, v in ALERTS.items() if k != "password"}], "[1] (alerts): give one"),
        ([BOT, {**ALERTS, "id": "bot"}], "two accounts share the id 'bot'"),
        ([BOT, {**ALERTS, "username": "BOT@contoso.com"}], "share the username"),
        ([BOT, {**ALERTS, "default": True}], "only one account may be the default"),
        ([{**BOT, "default": False}, ALERTS], 'mark one account "default": true'),
        ([BOT, {**ALERTS, "username": "two words"}], "[1] (alerts).username: must be a user"),
        ([BOT, {**ALERTS, "discovery_url": "ftp://x"}], "[1] (alerts).discovery_url: must be"),
        ([], "expected a non-empty list"),
    ],
)
def test_each_fault_names_the_entry_and_the_field(entries: list[Any], words: str) -> None:
    message = problem(accounts_env(*entries))
    assert message.startswith("BRIDGE_ACCOUNTS: ")
    assert words in message


def test_an_entry_needs_a_discovery_url_from_somewhere() -> None:
    env = {"BRIDGE_ACCOUNTS": json.dumps([BOT])}
    assert "[0] (bot).discovery_url: required" in problem(env)


def test_the_single_account_variables_do_not_mix_with_a_list() -> None:
    message = problem(accounts_env(BOT, BRIDGE_UCWA_USERNAME="other@contoso.com"))
    assert message.startswith("BRIDGE_UCWA_USERNAME: cannot be set with BRIDGE_ACCOUNTS")
    both = {"BRIDGE_ACCOUNTS": "[]", "BRIDGE_ACCOUNTS_FILE": "/x"}
    assert "set only one of" in problem(both)


def test_roles_that_do_not_sign_in_need_no_passwords() -> None:
    alerts = {"id": "alerts", "username": "alerts@contoso.com", "password_file": "/no/such/file"}
    entries = [{"id": "bot", "username": "bot@contoso.com", "default": True}, alerts]
    env = {"BRIDGE_ACCOUNTS": json.dumps(entries)}
    accounts = load_accounts(env, need_passwords=False)
    assert accounts.ids == ("bot", "alerts")
    assert all(account.password == "" for account in accounts)
    assert "give one of password" in problem(env)


@settings(max_examples=40, deadline=None)
@given(st.text(min_size=4, max_size=30).filter(lambda t: t.strip() and "\x00" not in t))
def test_a_password_is_never_in_an_error_or_a_repr(word: str) -> None:
    password = f"\u2603{word}\u2603"  # marked, so no ordinary text contains it by chance
    good = {**BOT, "password": password}
    accounts = load_accounts(accounts_env(good))
    assert password not in repr(accounts) and password not in str(accounts.items[0].public_view())
    for broken in ({**good, "id": "Bad Id"}, {**good, "extra": 1}, {**good, "password_file": "x"}):
        assert password not in problem(accounts_env(broken))
    settings_ = Settings.from_env("worker", {"BRIDGE_REDIS_URL": "redis://r", **accounts_env(good)})
    assert password not in repr(settings_)


def test_api_keys_are_bound_to_accounts_with_an_at_sign() -> None:
    keys = parse_api_keys(
        "key-for-every-account-0001,key-for-bot-and-alerts-01@bot|alerts,"
        "send-only-for-alerts-0001:send@alerts,key-with-scopes-00001:send,read@bot"
    )
    assert [key.accounts for key in keys] == [None, ("bot", "alerts"), ("alerts",), ("bot",)]
    assert {scope.value for scope in keys[3].scopes} == {"send", "read"}
    with pytest.raises(ValueError, match="account ids separated by"):
        parse_api_keys("key-for-bot-and-alerts-01@Bot")


def test_a_key_bound_to_an_account_that_is_not_configured_is_refused() -> None:
    env = {
        "BRIDGE_REDIS_URL": "redis://r",
        "BRIDGE_API_KEYS": "key-for-every-account-0001,key-for-nobody-00001@nobody",
        **accounts_env(BOT, ALERTS),
    }
    with pytest.raises(ConfigError) as caught:
        Settings.from_env("api", env)
    assert caught.value.lines == [
        "BRIDGE_API_KEYS: entry 2 names unknown accounts nobody (configured: alerts, bot)"
    ]
    # Without accounts configured, the one account there is is default.
    env = {"BRIDGE_REDIS_URL": "redis://r", "BRIDGE_API_KEYS": "key-for-bot-000000001@default"}
    assert Settings.from_env("api", env).api_keys[0].accounts == ("default",)


def test_both_sources_at_once_name_both_variables() -> None:
    env = {
        "BRIDGE_REDIS_URL": "redis://r",
        "BRIDGE_ACCOUNTS": json.dumps([BOT]),
        "BRIDGE_ACCOUNTS_FILE": "/nonexistent/accounts.yaml",
    }
    with pytest.raises(ConfigError) as caught:
        Settings.from_env("worker", env)
    assert [variable for variable, _ in caught.value.problems] == [
        "BRIDGE_ACCOUNTS",
        "BRIDGE_ACCOUNTS_FILE",
    ]
