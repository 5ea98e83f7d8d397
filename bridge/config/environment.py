"""Reading the ``BRIDGE_*`` environment for a command: every fault at once, one line each, an
unknown name refused with a did-you-mean; and the list of what a command reads, for its help.
"""

from __future__ import annotations

import difflib
import os
import re
import textwrap
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from pydantic import ValidationError
from pydantic_settings import EnvSettingsSource
from pydantic_settings.sources.utils import parse_env_vars

from bridge.config.accounts import DEFAULT_ID, AccountsError, load_accounts
from bridge.config.values import ConfigError
from bridge.config.variables import (
    COMMANDS,
    ONE_ACCOUNT,
    PREFIX,
    BridgeEnvironment,
    fields_of,
    known_variables,
    use_of,
    variable,
)

Problem = tuple[str, str]
_ORDER = {name: index for index, name in enumerate(BridgeEnvironment.model_fields)}
# Names Kubernetes (service links) and Docker links put in every container for a service whose
# name starts with "bridge-": not ours, so not refused as unknown. ``*_PORT`` only with its
# ``tcp://host:port`` value, so that a mistyped metrics port variable is still refused.
_SERVICE_LINK = re.compile(r"_SERVICE_HOST$|_SERVICE_PORT(_[A-Z0-9_]+)?$|_PORT_\d+_(TCP|UDP|SCTP)")
_LINK_VALUE = re.compile(r"^(tcp|udp|sctp)://")


class _MappingSource(EnvSettingsSource):
    """pydantic-settings' environment source over a given mapping instead of ``os.environ``:
    callers and tests pass an environment, and only the variables a command reads go in.
    (The source has no public hook for this; its loader is the one method replaced.)"""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self._given = environ
        super().__init__(BridgeEnvironment)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return parse_env_vars(
            self._given, self.case_sensitive, self.env_ignore_empty, self.env_parse_none_str
        )


def read_variables(environ: Mapping[str, str], fields: Iterable[str]) -> BridgeEnvironment:
    """The model with ``fields`` read from ``environ`` (the others at their defaults); a
    ``ConfigError`` naming every one that is invalid. Nothing is required here."""
    model, problems, _ = _read(environ, tuple(fields))
    if problems:
        raise ConfigError.of(problems)
    return model


def read_environment(
    command: str | Sequence[str], environ: Mapping[str, str] | None = None
) -> BridgeEnvironment:
    """What ``command`` (or each of several) reads, checked: types and bounds, what it
    requires, values that must agree, and no unknown ``BRIDGE_*`` name. A ``ConfigError``
    lists every fault."""
    env = os.environ if environ is None else environ
    commands = (command,) if isinstance(command, str) else tuple(command)
    fields = sorted({f for c in commands for f in fields_of(c)}, key=_ORDER.__getitem__)
    model, problems, failed = _read(env, fields)
    given = {f for f in fields if _given(env, f)}
    for name in fields:
        if name in given or not commands_requiring(name, commands):
            continue
        if name == "api_keys" and model.auth_disabled:
            continue
        if use_of(name).when == ONE_ACCOUNT and (
            _given(env, "accounts") or _given(env, "accounts_file")
        ):
            continue
        problems.append((variable(name), f"is required ({_hint(name)})"))
    problems.extend(_disagreements(model, set(fields) & given - failed))
    both = _given(env, "accounts") and _given(env, "accounts_file")
    if "accounts" in fields and both:
        words = f"set only one of {variable('accounts')} and {variable('accounts_file')}"
        problems.extend((variable(name), words) for name in ("accounts", "accounts_file"))
    elif "accounts" in fields:
        given_env = accounts_environ(model)
        if "ucwa_discovery_url" in failed:
            # Already named; stands in so entries without a URL of their own are not blamed.
            given_env[variable("ucwa_discovery_url")] = "https://discovery.invalid"
        try:
            signing_in = any(c in ("worker", "poller") for c in commands)
            accounts = load_accounts(given_env, need_passwords=signing_in)
        except AccountsError as exc:
            if exc.variable not in {name for name, _ in problems}:
                problems.append((exc.variable, exc.problem))
        else:
            known = set(accounts.ids) or {DEFAULT_ID}
            for index, key in enumerate(model.api_keys):
                unknown = [a for a in key.accounts or () if a not in known]
                if unknown:
                    problems.append(
                        (
                            variable("api_keys"),
                            f"entry {index + 1} names unknown accounts {', '.join(unknown)} "
                            f"(configured: {', '.join(sorted(known))})",
                        )
                    )
    problems.sort(key=lambda p: _ORDER.get(p[0].removeprefix(PREFIX).lower(), len(_ORDER)))
    problems.extend(unknown_names(env))
    if problems:
        raise ConfigError.of(problems)
    return model


ACCOUNT_FIELDS = (
    "accounts",
    "accounts_file",
    "ucwa_username",
    "ucwa_password",
    "ucwa_discovery_url",
)


def accounts_environ(model: BridgeEnvironment) -> dict[str, str]:
    """The account variables of a checked model, as ``load_accounts`` reads them."""
    return {variable(name): str(getattr(model, name) or "") for name in ACCOUNT_FIELDS}


def commands_requiring(name: str, commands: Iterable[str]) -> bool:
    return any(c in use_of(name).required for c in commands)


def unknown_names(environ: Mapping[str, str]) -> list[Problem]:
    """A problem for each ``BRIDGE_*`` name no command reads, with the closest known one."""
    known = known_variables()
    problems: list[Problem] = []
    for name in sorted(environ):
        if not name.startswith(PREFIX) or name in known:
            continue
        if _SERVICE_LINK.search(name) or (
            name.endswith("_PORT") and _LINK_VALUE.match(environ[name])
        ):
            continue
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.75)
        hint = f"did you mean {close[0]}?" if close else "no command reads it"
        problems.append((name, f"unknown variable; {hint}"))
    return problems


def _given(environ: Mapping[str, str], name: str) -> bool:
    return bool(environ.get(variable(name), "").strip())


def _read(
    environ: Mapping[str, str], fields: Sequence[str]
) -> tuple[BridgeEnvironment, list[Problem], set[str]]:
    """The model from what is valid, the problems of the rest and the fields that failed."""
    problems: list[Problem] = []
    failed: set[str] = set()
    given: dict[str, str] = {}
    for name in fields:
        value = environ.get(variable(name), "").strip()  # blank counts as unset
        try:
            # Bytes that are not UTF-8 reach ``os.environ`` as lone surrogates, which would
            # raise wherever the value is sent or logged: refuse them here, by name.
            value.encode("utf-8")
        except UnicodeEncodeError:
            problems.append((variable(name), "is not valid UTF-8"))
            failed.add(name)
            continue
        if value:
            given[variable(name)] = value
    values: dict[str, Any] = _MappingSource(given)()
    try:
        return BridgeEnvironment(**values), problems, failed
    except ValidationError as exc:
        for error in exc.errors():
            name = str(error["loc"][0])
            if name not in failed:
                failed.add(name)
                problems.append((variable(name), _problem(name, error)))
    kept = {k: v for k, v in values.items() if k not in failed}
    return BridgeEnvironment(**kept), problems, failed


def _problem(name: str, error: Any) -> str:
    """One pydantic error in the words of the rest of the bridge; a secret is never echoed."""
    kind, ctx = error["type"], error.get("ctx") or {}
    shown = "" if use_of(name).secret else f", not {error['input']!r}"
    if kind == "value_error":
        return str(ctx.get("error", error["msg"]))
    words = {
        "int_parsing": "must be a whole number",
        "int_from_float": "must be a whole number",
        "float_parsing": "must be a number",
        "finite_number": "must be a finite number",
        "bool_parsing": "must be true or false",
        "greater_than": f"must be greater than {ctx.get('gt')}",
        "greater_than_equal": f"must be at least {ctx.get('ge')}",
        "less_than": f"must be less than {ctx.get('lt')}",
        "less_than_equal": f"must be at most {ctx.get('le')}",
        "literal_error": f"must be one of {str(ctx.get('expected', '')).replace(' or ', ', ')}",
    }
    return words.get(kind, str(error["msg"])).replace("'", "") + shown


def _disagreements(model: BridgeEnvironment, valid: set[str]) -> list[Problem]:
    """Values that are fine alone but not together, or that name a file that is not there."""
    problems: list[Problem] = []
    if "idempotency_lock_ttl_s" in valid and model.idempotency_lock_ttl_s > (
        model.idempotency_ttl_s
    ):
        problems.append(
            (
                variable("idempotency_lock_ttl_s"),
                f"must be at most BRIDGE_IDEMPOTENCY_TTL_S ({model.idempotency_ttl_s})",
            )
        )
    if "rate_limit_keys" in valid:
        key_ids = {key.key_id for key in model.api_keys}
        for entry in model.rate_limit_keys:
            if entry.key_id not in key_ids:
                problems.append(
                    (
                        variable("rate_limit_keys"),
                        f"{entry.key_id!r} is not the key id of a configured API key",
                    )
                )
    for part in ("ucwa", "webhook"):
        bundle = getattr(model, f"{part}_ca_bundle")
        if f"{part}_ca_bundle" not in valid or bundle is None:
            continue
        if not getattr(model, f"{part}_tls_verify"):
            problems.append(
                (
                    variable(f"{part}_ca_bundle"),
                    f"is set but {variable(part + '_tls_verify')}=false",
                )
            )
        elif not os.path.exists(bundle):
            problems.append((variable(f"{part}_ca_bundle"), f"no such file or directory: {bundle}"))
    return problems


def _hint(name: str) -> str:
    description = BridgeEnvironment.model_fields[name].description or ""
    return description.split("; ")[0].split(": ")[0]


def shown_default(name: str) -> str:
    """The default of a field as a person would write the variable."""
    use = use_of(name)
    if use.shown_default is not None:
        return use.shown_default
    default = BridgeEnvironment.model_fields[name].default
    if default is None:
        return "(unset)"
    if isinstance(default, bool):
        return str(default).lower()
    if isinstance(default, float) and default.is_integer():
        return str(int(default))
    if isinstance(default, tuple):
        return ",".join(str(v) for v in default) or "(none)"
    return str(default)


def requirement(name: str, commands: Iterable[str]) -> str | None:
    """``required`` (with its condition) when one of ``commands`` needs the variable."""
    if not commands_requiring(name, commands):
        return None
    when = use_of(name).when
    return f"required {when}" if when else "required"


def variables_help(command: str, width: int = 79) -> str:
    """The variables ``command`` reads, for the end of its ``--help``."""
    lines = [f"environment variables read by {command} (blank counts as unset):"]
    for name in fields_of(command):
        need = requirement(name, (command,))
        lines.append(f"  {variable(name)}  [{need or 'default: ' + shown_default(name)}]")
        description = BridgeEnvironment.model_fields[name].description or ""
        lines.extend(textwrap.wrap(description, width, initial_indent=" " * 6,
                                   subsequent_indent=" " * 6))  # fmt: skip
    lines.append(f"A {PREFIX}* name no command reads is refused.")
    return "\n".join(lines)


def variables_table() -> list[str]:
    """The README's table of every variable: name, commands, default, meaning."""
    rows = ["| variable | read by | default | meaning |", "|---|---|---|---|"]
    for name in BridgeEnvironment.model_fields:
        use = use_of(name)
        commands = [c for c in COMMANDS if c in use.commands]
        required = [c for c in commands if c in use.required]
        default = shown_default(name)
        if required:
            default = "required" + (f" ({', '.join(required)})" if required != commands else "")
            default += f" {use.when}" if use.when else ""
        description = (BridgeEnvironment.model_fields[name].description or "").replace("|", "/")
        rows.append(f"| `{variable(name)}` | {', '.join(commands)} | {default} | {description} |")
    return rows
