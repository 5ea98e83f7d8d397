"""Poison input on the event channel: whatever a string field of an event carries, and whatever
one event makes the code raise, the batch is applied, the cursor moves and nothing else is lost.

Real Redis, the real sink and inbound staging, batches parsed from JSON text as the transport
receives it (the text boundary in ``HttpResponse.json`` included).
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.inbound.event_sink import EventSink
from bridge.inbound.quarantine import Quarantine
from bridge.ucwa.events import parse_events
from bridge.ucwa.messages import HttpResponse
from tests.inbound.test_staging import (
    ACCOUNT,
    APP,
    BASE,
    CONV,
    CURSOR,
    HI,
    batch_body,
    data_uri,
    invitation_event,
    message_event,
    new_hook,
    received,
)

ANY_TEXT = st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=0x10FFFF), max_size=40)


def raw_batch(communication: list[dict[str, Any]], conversation: list[dict[str, Any]]) -> str:
    # ensure_ascii: a lone surrogate travels as a \\u escape, as in UCWA
    return json.dumps(batch_body(communication, conversation))


def string_paths(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    if isinstance(value, str):
        yield path
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from string_paths(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from string_paths(item, (*path, index))


def replaced(value: Any, path: tuple[Any, ...], new: str) -> Any:
    copied = copy.deepcopy(value)
    target = copied
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = new
    return copied


EVENTS = [invitation_event("started"), message_event(2, data_uri("hello"))]
PATHS = [(i, *p) for i, event in enumerate(EVENTS) for p in string_paths(event)]


def apply_raw(client: redis.Redis, sink: EventSink, text: str) -> Any:
    """Parse as the poller does, then one cursor transaction."""
    batch = parse_events(HttpResponse(200, {}, text, BASE + APP).json())
    notices = sink.notices(batch, BASE)
    with client.pipeline() as pipe:
        pipe.watch(CURSOR)
        pipe.multi()
        sink.note_operations(batch, BASE, pipe)
        result = sink.apply_state(notices, 1, BASE, pipe)
        pipe.hset(CURSOR, "cursor", batch.cursor().href)
        pipe.execute()
    sink.settle(result)
    return result


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(where=st.sampled_from(PATHS), value=ANY_TEXT)
def test_any_string_in_any_field_of_an_event_is_applied_and_the_cursor_moves(
    redis_client: redis.Redis, where: tuple[Any, ...], value: str
) -> None:
    redis_client.flushdb()
    events = replaced(EVENTS, where, value)
    sink = EventSink(redis_client, ACCOUNT, inbound_hook=new_hook())

    apply_raw(redis_client, sink, raw_batch([events[0]], [events[1]]))

    assert redis_client.hget(CURSOR, "cursor") == f"{APP}/events?ack=2".encode()
    for event in received(redis_client):
        json.dumps(event, ensure_ascii=False).encode("utf-8")  # every staged body encodes
    for entry in Quarantine(redis_client, ACCOUNT).entries():
        json.dumps(entry, ensure_ascii=False).encode("utf-8")


def test_a_display_name_cut_in_half_is_repaired_and_forwarded(redis_client: redis.Redis) -> None:
    invitation = invitation_event("started")
    invitation["_embedded"]["messagingInvitation"]["_embedded"]["from"]["name"] = "Lene \ud83d"
    sink = EventSink(redis_client, ACCOUNT, inbound_hook=new_hook())

    apply_raw(redis_client, sink, raw_batch([invitation], []))

    [event] = received(redis_client)[:1]
    assert event["data"]["from"]["name"] == "Lene \ufffd"
    assert Quarantine(redis_client, ACCOUNT).entries() == []


ERRORS = [
    ValueError("bad"),
    KeyError("missing"),
    TypeError("odd"),
    UnicodeEncodeError("utf-8", "\ud83d", 0, 1, "surrogates not allowed"),
    RecursionError("deep"),
    AssertionError("broken invariant"),
]


@pytest.mark.parametrize("error", ERRORS, ids=lambda e: type(e).__name__)
def test_an_event_that_makes_the_code_raise_is_quarantined_and_the_rest_goes_on(
    redis_client: redis.Redis, error: Exception
) -> None:
    staging = new_hook()
    seen: list[object] = []

    def hook(pipe: redis.client.Pipeline, notice: Any, conv: Any) -> None:
        seen.append(notice)
        if getattr(notice, "href", "").endswith("/messages/2"):
            raise error
        staging(pipe, notice, conv)

    hook.begin_batch = staging.begin_batch  # type: ignore[attr-defined]
    sink = EventSink(redis_client, ACCOUNT, inbound_hook=hook)
    later = data_uri("the next one")

    result = apply_raw(
        redis_client,
        sink,
        raw_batch([], [message_event(2, HI), message_event(3, later)]),
    )

    assert result.quarantined == 1
    assert redis_client.hget(CURSOR, "cursor") == f"{APP}/events?ack=2".encode()
    texts = [event["data"]["text"] for event in received(redis_client)]
    assert texts == ["the next one"]
    [entry] = Quarantine(redis_client, ACCOUNT).entries()
    assert entry["error"] == type(error).__name__
    assert entry["ids"]["href"].endswith(f"{CONV}/messaging/messages/2")
    assert entry["stage"] == "apply"


def test_an_operator_reads_the_quarantine_with_the_command_line(
    redis_client: redis.Redis, redis_url: str
) -> None:
    staging = new_hook()

    def hook(pipe: redis.client.Pipeline, notice: Any, conv: Any) -> None:
        raise ValueError("cannot stage this one")

    hook.begin_batch = staging.begin_batch  # type: ignore[attr-defined]
    apply_raw(
        redis_client,
        EventSink(redis_client, ACCOUNT, inbound_hook=hook),
        raw_batch([], [message_event(2, HI)]),
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
    shown = subprocess.run(
        [sys.executable, "-m", "bridge.cli", "quarantine", "--limit", "5"],
        env={**env, "BRIDGE_REDIS_URL": redis_url, "BRIDGE_UCWA_USERNAME": ACCOUNT.upper()},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert shown.returncode == 0, shown.stderr
    [line] = shown.stdout.splitlines()
    entry = json.loads(line)
    assert entry["stage"] == "apply" and entry["error"] == "ValueError"
    assert entry["detail"] == "cannot stage this one"
    assert entry["ids"]["href"].endswith("/messages/2")
    missing = subprocess.run(
        [sys.executable, "-m", "bridge.cli", "quarantine"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert missing.returncode == 78 and "BRIDGE_REDIS_URL" in missing.stderr
