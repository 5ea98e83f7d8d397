"""The Skype for Business accounts a deployment speaks as.

Sources, one of: ``BRIDGE_ACCOUNTS`` (a JSON list), ``BRIDGE_ACCOUNTS_FILE`` (YAML or JSON: a
list, or ``{accounts: [...]}``), or the single-account variables ``BRIDGE_UCWA_USERNAME``,
``BRIDGE_UCWA_PASSWORD`` and ``BRIDGE_UCWA_DISCOVERY_URL``, which make one account named
``default``. Each entry is ``{id, username, password | password_file, discovery_url, default}``;
an entry without ``discovery_url`` takes ``BRIDGE_UCWA_DISCOVERY_URL``.

An account's ``id`` is what callers and events name (``from``, ``account``); its ``key`` (the
lowercased username) names its Redis state (session, lease, conversations), so renaming an
account keeps its UCWA application and its state.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from bridge.config.values import check_http_url

ACCOUNT_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")
DEFAULT_ID = "default"
MAX_ACCOUNTS = 200
ACCOUNTS, ACCOUNTS_FILE = "BRIDGE_ACCOUNTS", "BRIDGE_ACCOUNTS_FILE"
SINGLE = ("BRIDGE_UCWA_USERNAME", "BRIDGE_UCWA_PASSWORD")


class AccountsError(ValueError):
    """A bad accounts setting: ``variable`` and one line naming the entry and field."""

    def __init__(self, variable: str, problem: str) -> None:
        self.variable = variable
        self.problem = problem
        super().__init__(f"{variable}: {problem}")


@dataclass(frozen=True, repr=False)
class Account:
    """One UCWA account; the password never appears in ``repr`` or a view."""

    id: str
    username: str
    password: str = field(repr=False)
    discovery_url: str
    default: bool = False

    @property
    def key(self) -> str:
        """The name of the account's Redis state: its lowercased username."""
        return self.username.lower()

    def __repr__(self) -> str:
        return f"Account(id={self.id!r}, username={self.username!r}, default={self.default})"

    def public_view(self) -> dict[str, Any]:
        return {"id": self.id, "username": self.username, "default": self.default}


@dataclass(frozen=True)
class Accounts:
    """The configured accounts, in configuration order; exactly one is the default."""

    items: tuple[Account, ...]

    def __post_init__(self) -> None:
        if self.items and sum(a.default for a in self.items) != 1:
            raise ValueError("exactly one account is the default")

    def __iter__(self) -> Iterator[Account]:
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)

    def __bool__(self) -> bool:
        return bool(self.items)

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(a.id for a in self.items)

    @property
    def default(self) -> Account | None:
        return next((a for a in self.items if a.default), None)

    def get(self, account_id: str | None) -> Account | None:
        """The account named ``account_id``; the default for None."""
        if account_id is None:
            return self.default
        return next((a for a in self.items if a.id == account_id), None)

    def key_of(self, account_id: str | None) -> str | None:
        """The Redis name of an account's state, or None for an account not configured."""
        account = self.get(account_id)
        return account.key if account else None

    @staticmethod
    def none() -> Accounts:
        return Accounts(())


class _Entry(BaseModel):
    """One entry of ``BRIDGE_ACCOUNTS``/``BRIDGE_ACCOUNTS_FILE``, as written."""

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    id: str = Field(min_length=1)
    username: str = Field(min_length=1)
    password: SecretStr | None = None
    password_file: str | None = None
    discovery_url: str | None = None
    default: bool = False

    @field_validator("id")
    @classmethod
    def _id(cls, value: str) -> str:
        if not ACCOUNT_ID.fullmatch(value):
            raise ValueError(
                "must be 1 to 32 lowercase letters, digits, '-' or '_', starting with a letter "
                "or digit"
            )
        return value

    @field_validator("username")
    @classmethod
    def _username(cls, value: str) -> str:
        value = value.strip()
        if not value or any(c.isspace() for c in value):
            raise ValueError("must be a user name without spaces, e.g. bot@contoso.com")
        return value

    @field_validator("discovery_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        return None if value is None else check_http_url(value.strip())


def load_accounts(env: Mapping[str, str], need_passwords: bool = True) -> Accounts:
    """The accounts from the first configured source; none when no source is set.

    Only the roles that sign in (worker, poller) need the passwords and discovery URLs: for the
    others an entry may leave them out, and a ``password_file`` is not read.

    Raises ``AccountsError`` naming the variable, the entry (``[index]`` and its id) and the
    field. Passwords are never part of a message.
    """
    sources = [name for name in (ACCOUNTS, ACCOUNTS_FILE) if env.get(name, "").strip()]
    if len(sources) > 1:
        raise AccountsError(ACCOUNTS, f"set only one of {ACCOUNTS} and {ACCOUNTS_FILE}")
    shared_url = env.get("BRIDGE_UCWA_DISCOVERY_URL", "").strip() or None
    if not sources:
        return _single(env, shared_url)
    source = sources[0]
    if source == ACCOUNTS:
        try:
            items = yaml.safe_load(env[source])  # JSON is YAML
        except yaml.YAMLError:
            raise AccountsError(source, "is not valid JSON") from None
    else:
        items = _read_file(env[source].strip())
    accounts = _from_items(items, source, shared_url, need_passwords)
    for name in SINGLE:
        if env.get(name, "").strip():
            raise AccountsError(
                name, f"cannot be set with {source}: give each account's username there"
            )
    return accounts


def _single(env: Mapping[str, str], url: str | None) -> Accounts:
    username = env.get("BRIDGE_UCWA_USERNAME", "").strip()
    password = env.get("BRIDGE_UCWA_PASSWORD", "").strip()
    if not username:
        return Accounts.none()
    return Accounts((Account(DEFAULT_ID, username, password, url or "", default=True),))


def _read_file(path: str) -> Any:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise AccountsError(ACCOUNTS_FILE, f"cannot read {path} ({exc.strerror})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        raise AccountsError(ACCOUNTS_FILE, f"{path} is neither valid YAML nor JSON") from None
    if isinstance(data, dict) and "accounts" in data:
        return data["accounts"]
    return data


def _from_items(
    items: Any, source: str, shared_url: str | None, need_passwords: bool = True
) -> Accounts:
    if not isinstance(items, list) or not items:
        raise AccountsError(source, "expected a non-empty list of account objects")
    if len(items) > MAX_ACCOUNTS:
        raise AccountsError(source, f"at most {MAX_ACCOUNTS} accounts")
    accounts: list[Account] = []
    for index, item in enumerate(items):
        where = f"[{index}]"
        if isinstance(item, dict) and isinstance(item.get("id"), str):
            where += f" ({item['id']})"
        if not isinstance(item, dict):
            raise AccountsError(source, f"{where}: expected an object")
        accounts.append(_account(item, where, source, shared_url, need_passwords))
    _check_unique(accounts, source)
    defaults = [a for a in accounts if a.default]
    if len(defaults) > 1:
        raise AccountsError(
            source, f"only one account may be the default ({', '.join(a.id for a in defaults)})"
        )
    if not defaults:
        if len(accounts) > 1:
            raise AccountsError(source, 'mark one account "default": true')
        accounts[0] = Account(
            accounts[0].id, accounts[0].username, accounts[0].password,
            accounts[0].discovery_url, default=True,
        )  # fmt: skip
    return Accounts(tuple(accounts))


def _account(
    item: Mapping[str, Any],
    where: str,
    source: str,
    shared_url: str | None,
    need_passwords: bool = True,
) -> Account:
    try:
        entry = _Entry.model_validate(item)
    except ValidationError as exc:
        error = exc.errors()[0]
        name = ".".join(str(part) for part in error["loc"])
        words = str(error["ctx"]["error"]) if error["type"] == "value_error" else error["msg"]
        if error["type"] == "extra_forbidden":
            words = "unknown field"
        raise AccountsError(source, f"{where}.{name}: {words}") from None
    if entry.password is not None and entry.password_file is not None:
        raise AccountsError(source, f"{where}: give one of password and password_file")
    if entry.password is None and entry.password_file is None:
        if need_passwords:
            raise AccountsError(source, f"{where}: give one of password and password_file")
        password = ""
    elif not need_passwords:
        password = ""
    elif entry.password_file is not None:
        try:
            password = Path(entry.password_file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise AccountsError(
                source, f"{where}.password_file: cannot read {entry.password_file} ({exc.strerror})"
            ) from None
    else:
        assert entry.password is not None
        password = entry.password.get_secret_value()
    if need_passwords and not password:
        raise AccountsError(source, f"{where}: the password is empty")
    url = entry.discovery_url or shared_url or ""
    if need_passwords and not url:
        raise AccountsError(
            source, f"{where}.discovery_url: required (or set BRIDGE_UCWA_DISCOVERY_URL)"
        )
    return Account(entry.id, entry.username, password, url, entry.default)


def _check_unique(accounts: list[Account], source: str) -> None:
    for attribute in ("id", "key"):
        seen: set[str] = set()
        for account in accounts:
            value = getattr(account, attribute)
            if value in seen:
                what = "id" if attribute == "id" else "username"
                raise AccountsError(source, f"two accounts share the {what} {value!r}")
            seen.add(value)
