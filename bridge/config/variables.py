"""Every ``BRIDGE_*`` variable in one pydantic-settings model: its type and bounds, its default,
the commands that read it and those that cannot start without it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BeforeValidator, Field
from pydantic_settings import BaseSettings, NoDecode, PydanticBaseSettingsSource, SettingsConfigDict

from bridge.config.values import (
    ApiKey,
    KeyRate,
    Rate,
    check_bind,
    check_host,
    check_http_url,
    check_redis_url,
    parse_api_keys,
    parse_key_rates,
    parse_rate,
)

PREFIX = "BRIDGE_"
COMMANDS = ("api", "worker", "poller", "demo", "health", "quarantine")
API, WORKER, POLLER, DEMO, HEALTH, QUARANTINE = COMMANDS
EVERY = frozenset(COMMANDS)
WITH_REDIS = frozenset({API, WORKER, POLLER, HEALTH, QUARANTINE})
UCWA = frozenset({WORKER, POLLER})
WEBHOOKS = frozenset({API, WORKER, POLLER})  # the api serves the delivery log and replay
ACCOUNT_USERS = frozenset({API, WORKER, POLLER, HEALTH, QUARANTINE})
ONE_ACCOUNT = "unless BRIDGE_ACCOUNTS or BRIDGE_ACCOUNTS_FILE is set"
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
# The Svix schedule: the first try at once, then retries 5 s, 5 min, 30 min, 2 h, 5 h, 10 h and
# 10 h after each failure: eight tries over about 28 hours, then dead-lettered.
DEFAULT_WEBHOOK_SCHEDULE_S: tuple[float, ...] = (5, 300, 1800, 7200, 18000, 36000, 36000)


@dataclass(frozen=True)
class Use:
    """Which commands read a variable, which of them cannot start without it (``when`` says
    on what condition, if any) and whether its value is a secret (never echoed in errors)."""

    commands: frozenset[str]
    required: frozenset[str] = frozenset()
    when: str = ""
    secret: bool = False
    shown_default: str | None = None  # for help and the README, where the default is not a value


def _upper(value: Any) -> Any:
    if isinstance(value, str):
        value = value.strip().upper()
        return "WARNING" if value == "WARN" else value
    return value


def _lower(value: Any) -> Any:
    return value.strip().lower() if isinstance(value, str) else value


def _comma_list(value: Any) -> Any:
    if isinstance(value, str):
        return tuple(part.strip().lower() for part in value.split(",") if part.strip())
    return value


def _schedule(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    text = value.strip()
    if text.lower() == "none":
        return ()  # a single attempt, never retried
    parts = [p.strip() for p in text.strip("[]").split(",") if p.strip()]
    try:
        return tuple(float(p) for p in parts)
    except ValueError:
        raise ValueError(
            f"must be comma-separated seconds like 0,5,300, or none; not {value!r}"
        ) from None


def _delays(value: tuple[float, ...]) -> tuple[float, ...]:
    if any(not (0 <= d < float("inf")) for d in value):
        raise ValueError("delays must be finite numbers >= 0")
    return value


Seconds = Annotated[float, Field(gt=0, allow_inf_nan=False)]
Count = Annotated[int, Field(gt=0)]
Flag = bool
Host = Annotated[str, AfterValidator(check_host)]
HttpUrl = Annotated[str, AfterValidator(check_http_url)]


def _bounded(maximum: int) -> Any:
    return Field(gt=0, le=maximum)


class BridgeEnvironment(BaseSettings):
    """The ``BRIDGE_*`` environment, typed. Build it with ``bridge.config.environment``, which
    reads only the variables a command uses and reports every fault at once."""

    model_config = SettingsConfigDict(
        env_prefix=PREFIX,
        case_sensitive=False,
        env_ignore_empty=True,
        frozen=True,
        validate_default=False,
        hide_input_in_errors=True,
        extra="ignore",
    )

    # Every command
    log_level: Annotated[
        Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"],
        BeforeValidator(_upper),
        Use(EVERY),
    ] = Field("INFO", description="DEBUG, INFO, WARNING (or WARN), ERROR or CRITICAL")
    log_format: Annotated[Literal["json", "text"], BeforeValidator(_lower), Use(EVERY)] = Field(
        "json", description="json (one object per line) or text (human-readable lines)"
    )
    redis_url: Annotated[
        str | None, AfterValidator(check_redis_url), Use(WITH_REDIS, WITH_REDIS, secret=True)
    ] = Field(
        None,
        description="Redis with persistence and noeviction: redis://, rediss://, unix:// or "
        "redis+sentinel://host:26379,.../<master>/<db>",
    )

    # The HTTP API
    api_keys: Annotated[
        tuple[ApiKey, ...],
        NoDecode,
        BeforeValidator(lambda v: parse_api_keys(v) if isinstance(v, str) else v),
        Use(frozenset({API}), frozenset({API}), "unless BRIDGE_AUTH_DISABLED is true", True),
    ] = Field((), description="comma-separated keys of 16+ characters; each may be "
              "key:scope with scopes send and read (key:send,read)")  # fmt: skip
    auth_disabled: Annotated[Flag, Use(frozenset({API}))] = Field(
        False, description="accept requests without a key; only for local experiments"
    )
    api_bind: Annotated[str, AfterValidator(check_bind), Use(frozenset({API}))] = Field(
        "127.0.0.1:8080", description="where gunicorn listens (the --bind option wins)"
    )
    api_workers: Annotated[int, _bounded(256), Use(frozenset({API}))] = Field(
        2, description="gunicorn worker processes"
    )
    api_graceful_timeout_s: Annotated[Seconds, Use(frozenset({API}))] = Field(
        20.0,
        description="after SIGTERM, how long requests in progress may take before they are cut off",
    )
    api_header_timeout_s: Annotated[int, _bounded(600), Use(frozenset({API}))] = Field(
        10, description="a client that has not sent its request line and headers within this "
        "many seconds gets a 408 problem and is disconnected"
    )  # fmt: skip
    api_body_timeout_s: Annotated[int, _bounded(3600), Use(frozenset({API}))] = Field(
        30, description="the same for the request body"
    )
    api_limit_request_line: Annotated[int, _bounded(8190), Use(frozenset({API}))] = Field(
        4094, description="longest request line in bytes (414)"
    )
    api_limit_request_fields: Annotated[int, _bounded(32768), Use(frozenset({API}))] = Field(
        50, description="header fields per request (431)"
    )
    api_limit_request_field_size: Annotated[int, _bounded(65536), Use(frozenset({API}))] = Field(
        8190, description="bytes per header field (431)"
    )
    api_worker_connections: Annotated[int, _bounded(100_000), Use(frozenset({API}))] = Field(
        1000,
        description="connections each gunicorn (gevent) worker serves at once; more wait in "
        "the listen backlog",
    )
    max_body_bytes: Annotated[int, _bounded(16 * 1024 * 1024), Use(frozenset({API}))] = Field(
        64 * 1024, description="largest request body (413)"
    )
    max_message_chars: Annotated[int, _bounded(1_000_000), Use(frozenset({API}))] = Field(
        8_000, description="longest text or html of a message (413)"
    )
    default_validity_s: Annotated[int, _bounded(86_400), Use(frozenset({API}))] = Field(
        300, description="validity of a message when the request gives none"
    )
    idempotency_ttl_s: Annotated[Count, Use(frozenset({API}))] = Field(
        86_400, description="how long an Idempotency-Key is remembered"
    )
    idempotency_lock_ttl_s: Annotated[Count, Use(frozenset({API}))] = Field(
        30, description="how long a request holds its Idempotency-Key (at most the TTL above)"
    )
    record_ttl_s: Annotated[Count, Use(frozenset({API, WORKER, POLLER}))] = Field(
        7 * 86_400, description="how long message records are kept"
    )
    rate_limit: Annotated[
        Rate | None,
        NoDecode,
        BeforeValidator(lambda v: parse_rate(v) if isinstance(v, str) else v),
        Use(frozenset({API})),
    ] = Field(Rate(10, 1), description="requests per API key: N/s, N/min, N/h or off (429)")
    rate_limit_burst: Annotated[int, _bounded(1_000_000), Use(frozenset({API}))] = Field(
        100, description="requests a key may make at once before the rate applies"
    )
    rate_limit_keys: Annotated[
        tuple[KeyRate, ...],
        NoDecode,
        BeforeValidator(lambda v: parse_key_rates(v) if isinstance(v, str) else v),
        Use(frozenset({API}), shown_default="(none)"),
    ] = Field((), description="per-key overrides <key id>=<rate>[:<burst>], comma-separated")
    poller_max_lag_s: Annotated[Seconds, Use(frozenset({API, HEALTH}))] = Field(
        240.0,
        description="readiness fails when the poller's last event GET completed longer ago",
    )

    # The UCWA accounts: several (BRIDGE_ACCOUNTS or BRIDGE_ACCOUNTS_FILE), or one
    accounts: Annotated[str | None, NoDecode, Use(ACCOUNT_USERS, secret=True)] = Field(
        None,
        description="accounts as a JSON list of {id, username, password or password_file, "
        "discovery_url, default}",
        repr=False,
    )
    accounts_file: Annotated[str | None, Use(ACCOUNT_USERS)] = Field(
        None, description="accounts from a YAML or JSON file (a list, or {accounts: [...]})"
    )
    ucwa_discovery_url: Annotated[HttpUrl | None, Use(UCWA, UCWA, ONE_ACCOUNT)] = Field(
        None,
        description="the autodiscover root, e.g. https://lyncdiscover.contoso.com; with "
        "BRIDGE_ACCOUNTS, for entries that give none",
    )
    ucwa_username: Annotated[
        str | None,
        Use(ACCOUNT_USERS, frozenset({WORKER, POLLER, QUARANTINE}), ONE_ACCOUNT),
    ] = Field(
        None,
        description="the bot account (password grant), named default; the api and health "
        "check its poller's readiness with it",
    )
    ucwa_password: Annotated[str | None, Use(UCWA, UCWA, ONE_ACCOUNT, secret=True)] = Field(
        None, description="the bot account's password", repr=False
    )
    ucwa_tls_verify: Annotated[Flag, Use(UCWA)] = Field(
        True, description="false turns certificate checks off (logged); never in production"
    )
    ucwa_ca_bundle: Annotated[str | None, Use(UCWA, shown_default="(system CAs)")] = Field(
        None, description="PEM file or directory of the CAs that sign the UCWA server"
    )
    ucwa_timeout_s: Annotated[int, _bounded(600), Use(UCWA)] = Field(
        30, description="total deadline of one UCWA request, connect to last byte"
    )
    ucwa_connection_idle_s: Annotated[
        float, Field(ge=0, le=110, allow_inf_nan=False), Use(UCWA)
    ] = Field(
        30.0,
        description="a kept-alive UCWA connection idle longer is not reused (under IIS's 120 s; "
        "0: a new connection for every request)",
    )
    ucwa_max_body_bytes: Annotated[int, _bounded(256 * 1024 * 1024), Use(UCWA)] = Field(
        4 * 1024 * 1024, description="larger UCWA answers are refused (ResponseTooLarge)"
    )
    ucwa_trusted_hosts: Annotated[
        tuple[Host, ...], NoDecode, BeforeValidator(_comma_list), Use(UCWA)
    ] = Field(
        (),
        description="extra host names (comma-separated, https) the password and token may go "
        "to, e.g. a WebTicket service on another host",
    )

    # The worker's send flow
    invitation_timeout_s: Annotated[Seconds, Use(frozenset({WORKER}))] = Field(
        45.0, description="when the watchdog asks UCWA about a cold send's outcome"
    )
    message_timeout_s: Annotated[Seconds, Use(frozenset({WORKER}))] = Field(
        20.0, description="when the watchdog asks UCWA about a warm send's outcome"
    )
    ambiguity_grace_s: Annotated[Seconds, Use(frozenset({WORKER}))] = Field(
        5.0, description="after a POST whose answer was lost, how long to wait for its events"
    )
    max_attempts: Annotated[int, _bounded(1000), Use(frozenset({WORKER}))] = Field(
        8, description="transient failures before a message fails"
    )
    backoff_base_s: Annotated[Seconds, Use(frozenset({WORKER}))] = Field(
        1.0, description="first retry delay; doubles, with 20 % jitter, Retry-After honoured"
    )
    backoff_cap_s: Annotated[Seconds, Use(frozenset({WORKER}))] = Field(
        60.0, description="longest retry delay"
    )
    maintenance_interval_s: Annotated[Count, Use(frozenset({WORKER}))] = Field(
        30, description="RQ registry cleanup: a killed worker's job is retried after it"
    )
    worker_runners: Annotated[int, _bounded(8), Use(frozenset({WORKER}))] = Field(
        2, description="job runners per worker process, sharing its one UCWA request in flight"
    )
    metrics_port: Annotated[
        int | None, Field(ge=0, le=65535), Use(UCWA, shown_default="(not served)")
    ] = Field(None, description="serve Prometheus /metrics on this port (0: any free one, logged)")

    # The poller
    event_timeout_s: Annotated[int, Field(ge=180, le=1800), Use(frozenset({POLLER}))] = Field(
        180, description="UCWA event long-poll timeout; the read timeout is 30 s longer"
    )
    keepalive_s: Annotated[Seconds, Use(frozenset({POLLER}))] = Field(
        150.0, description="reportMyActivity interval (UCWA wants less than 4 min)"
    )
    poller_lease_s: Annotated[Seconds, Use(frozenset({POLLER}))] = Field(
        5.0, description="lease TTL: a standby takes over this long after the active one dies"
    )
    conversation_idle_s: Annotated[Seconds, Use(frozenset({POLLER}))] = Field(
        600.0, description="idle conversations are ended (stopMessaging) after this"
    )
    sweep_s: Annotated[Seconds, Use(frozenset({POLLER}))] = Field(
        5.0, description="how often stalled recipient lines are restarted"
    )
    token_renew_margin_s: Annotated[Seconds, Use(frozenset({POLLER}))] = Field(
        300.0, description="the OAuth token is renewed this long before it expires"
    )
    webhook_typing_events: Annotated[Flag, Use(frozenset({POLLER}))] = Field(
        False, description="emit conversation.typing events"
    )
    webhook_ended_events: Annotated[Flag, Use(frozenset({POLLER}))] = Field(
        False, description="emit conversation.ended events"
    )

    # Health checks
    worker_max_heartbeat_s: Annotated[Seconds, Use(frozenset({HEALTH}))] = Field(
        120.0, description="health worker fails when the RQ heartbeat is older"
    )

    # Webhooks: endpoints (one source of three) and delivery
    webhooks: Annotated[str | None, NoDecode, Use(WEBHOOKS, secret=True)] = Field(
        None, description="endpoints as a JSON list of {id, url, secrets, event_types, ...}",
        repr=False,
    )  # fmt: skip
    webhooks_file: Annotated[str | None, Use(WEBHOOKS)] = Field(
        None, description="endpoints from a YAML or JSON file (a list, or {endpoints: [...]})"
    )
    webhook_url: Annotated[HttpUrl | None, Use(WEBHOOKS, secret=True)] = Field(
        None, description="one endpoint's URL (with BRIDGE_WEBHOOK_SECRET)", repr=False
    )
    webhook_secret: Annotated[str | None, Use(WEBHOOKS, secret=True)] = Field(
        None, description="its whsec_ secret(s), comma-separated while rotating", repr=False
    )
    webhook_events: Annotated[str | None, Use(WEBHOOKS, shown_default="(the default set)")] = Field(
        None, description="its event types, comma-separated"
    )
    webhook_timeout_s: Annotated[Seconds, Use(WEBHOOKS)] = Field(
        15.0, description="connect and read timeout of one delivery attempt"
    )
    webhook_schedule_s: Annotated[
        tuple[float, ...],
        NoDecode,
        BeforeValidator(_schedule),
        AfterValidator(_delays),
        Use(WEBHOOKS, shown_default="5,300,1800,7200,18000,36000,36000"),
    ] = Field(
        DEFAULT_WEBHOOK_SCHEDULE_S,
        description="seconds before each retry, comma-separated, or none (one attempt)",
    )
    webhook_jitter: Annotated[float, Field(ge=0, lt=1), Use(WEBHOOKS)] = Field(
        0.2, description="random spread of each retry delay, a fraction below 1"
    )
    webhook_batch_size: Annotated[Count, Field(le=100), Use(WEBHOOKS)] = Field(
        10, description="most deliveries to one endpoint that one job makes, from one staging"
    )
    webhook_retry_after_cap_s: Annotated[float, Field(ge=0, allow_inf_nan=False), Use(WEBHOOKS)] = (
        Field(36000.0, description="longest Retry-After a receiver may ask for")
    )
    webhook_allow_private: Annotated[Flag, Use(WEBHOOKS)] = Field(
        False, description="allow receivers on private, loopback and link-local addresses"
    )
    webhook_retention_s: Annotated[Count, Use(WEBHOOKS)] = Field(
        7 * 86_400, description="how long delivery records are kept"
    )
    webhook_tls_verify: Annotated[Flag, Use(WEBHOOKS)] = Field(
        True, description="false turns receivers' certificate checks off; never in production"
    )
    webhook_ca_bundle: Annotated[str | None, Use(WEBHOOKS, shown_default="(system CAs)")] = Field(
        None, description="PEM file or directory of the CAs that sign the receivers"
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # ``bridge.config.environment`` hands in the variables a command reads (through
        # pydantic-settings' own environment source); nothing else may slip in.
        return (init_settings,)


def use_of(name: str) -> Use:
    """The ``Use`` of a field."""
    for item in BridgeEnvironment.model_fields[name].metadata:
        if isinstance(item, Use):
            return item
    raise LookupError(f"{name} has no Use")


def variable(name: str) -> str:
    """The variable of a field: ``BRIDGE_REDIS_URL`` for ``redis_url``."""
    return PREFIX + name.upper()


def fields_of(command: str) -> tuple[str, ...]:
    """The fields ``command`` reads, in the model's order."""
    if command not in COMMANDS:
        raise ValueError(f"unknown command {command!r}; expected one of {', '.join(COMMANDS)}")
    return tuple(
        name for name in BridgeEnvironment.model_fields if command in use_of(name).commands
    )


def known_variables() -> tuple[str, ...]:
    return tuple(variable(name) for name in BridgeEnvironment.model_fields)
