"""The inbound hook inside a real cursor transaction: webhook deliveries and RQ jobs exist
exactly once per typed IM, across batches, replays, restarts and discarded transactions.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from rq import Queue

from bridge.inbound.event_sink import EventSink
from bridge.inbound.events import InboundEvents
from bridge.ucwa.events import parse_events
from bridge.webhooks.endpoints import WebhookEndpoint
from bridge.webhooks.jobs import QUEUE_NAME
from bridge.webhooks.log import Keys
from bridge.webhooks.settings import WebhookSettings

ACCOUNT = "toshm@contoso.com"
BASE = "https://lyncweb.contoso.com"
APP = "/ucwa/oauth/v1/applications/103"
COMM = f"{APP}/communication"
CONV = f"{COMM}/conversations/eee0"
INV = f"{COMM}/messagingInvitations/6408"
LENE = "sip:lenea@contoso.com"
CURSOR = f"poller:{ACCOUNT}:cursor"
SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef0123").decode()
ENDPOINTS = [
    WebhookEndpoint("alerts", "https://alerts.example/skype", [SECRET]),
    WebhookEndpoint("chatops", "https://chatops.example/skype", [SECRET]),
]


def data_uri(text: str) -> str:
    return "data:text/plain;charset=utf-8;base64," + base64.b64encode(text.encode()).decode()


HI = "data:text/plain;charset=utf-8,Hi+Tosh%0d%0a"


# -- event payloads shaped like ReceiveAnIM.md -----------------------------------------------


def invitation_event(kind: str) -> dict[str, Any]:
    links: dict[str, Any] = {
        "self": {"href": INV},
        "to": {"href": f"{APP}/people/toshm@contoso.com"},
        "conversation": {"href": CONV},
        "messaging": {"href": f"{CONV}/messaging"},
        "message": {"href": HI},
    }
    if kind == "started":
        links["accept"] = {"href": f"{INV}/accept"}
        links["decline"] = {"href": f"{INV}/decline"}
    resource = {
        "direction": "Incoming",
        "importance": "Normal",
        "threadId": "Ac7bUftwUcVMzgTzRl+OQchCsUn35Q==",
        "state": "Connecting",
        "subject": "",
        "_links": links,
        "_embedded": {
            "from": {
                "name": "Lene Aaling",
                "uri": LENE,
                "_links": {"self": {"href": f"{CONV}/participants/lenea@contoso.com"}},
            }
        },
    }
    return {
        "link": {"rel": "messagingInvitation", "href": INV},
        "type": kind,
        "_embedded": {"messagingInvitation": resource},
    }


def message_event(number: int, plain: str, kind: str = "completed") -> dict[str, Any]:
    href = f"{CONV}/messaging/messages/{number}"
    resource = {
        "direction": "Incoming",
        "timeStamp": f"/Date({1383784870271 + number * 1000})/",
        "_links": {
            "self": {"href": href},
            "contact": {"href": f"{APP}/people/lenea@contoso.com"},
            "participant": {
                "href": f"{CONV}/participants/lenea@contoso.com",
                "title": "Lene Aaling",
            },
            "messaging": {"href": f"{CONV}/messaging"},
            "plainMessage": {"href": plain},
        },
    }
    event = {
        "link": {"rel": "message", "href": href},
        "type": kind,
        "_embedded": {"message": resource},
    }
    if kind == "completed":
        event["status"] = "Success"
    return event


def typing_event(kind: str) -> dict[str, Any]:
    return {
        "link": {"rel": "participant", "href": f"{CONV}/participants/lenea@contoso.com"},
        "in": {"rel": "typingParticipants", "href": f"{CONV}/messaging/typingParticipants"},
        "type": kind,
    }


def batch_body(
    communication: list[dict[str, Any]], conversation: list[dict[str, Any]]
) -> dict[str, Any]:
    """An event answer's JSON: the events of the communication and of the conversation."""
    senders = []
    if communication:
        senders.append({"rel": "communication", "href": COMM, "events": communication})
    if conversation:
        senders.append({"rel": "conversation", "href": CONV, "events": conversation})
    return {"_links": {"next": {"href": f"{APP}/events?ack=2"}}, "sender": senders}


def batch(communication: list[dict[str, Any]], conversation: list[dict[str, Any]]) -> Any:
    return parse_events(batch_body(communication, conversation))


CONVERSATION_ADDED = {
    "link": {"rel": "conversation", "href": CONV},
    "type": "added",
    "_embedded": {"conversation": {"state": "Incoming", "_links": {}}},
}
INVITED = batch([invitation_event("started"), CONVERSATION_ADDED, invitation_event("updated")], [])
REPEAT = batch([], [message_event(2, HI)])
SECOND = batch(
    [], [message_event(3, data_uri("second"), "started"), message_event(3, data_uri("second"))]
)


# -- harness ---------------------------------------------------------------------------------


@pytest.fixture()
def client(redis_client: redis.Redis) -> Iterator[redis.Redis]:
    """The session's real Redis, flushed around each test."""
    yield redis_client


def apply(client: redis.Redis, hook: InboundEvents, *batches: Any, discard: bool = False) -> None:
    """One cursor transaction over ``batches``, as the poller runs it."""
    sink = EventSink(client, ACCOUNT, inbound_hook=hook)
    notices = [n for b in batches for n in sink.notices(b, BASE)]
    with client.pipeline() as pipe:
        pipe.watch(CURSOR)
        pipe.multi()
        hook.begin_batch()
        sink.apply_state(notices, 1, BASE, pipe)
        pipe.hset(CURSOR, "cursor", f"{APP}/events?ack=next")
        if discard:
            pipe.reset()
        else:
            pipe.execute()


def received(client: redis.Redis) -> list[dict[str, Any]]:
    bodies = [json.loads(client.get(k) or b"") for k in client.keys(Keys.event("*"))]
    return [b for b in bodies if b["type"] == "message.received"]


def job_ids(client: redis.Redis) -> list[str]:
    return Queue(QUEUE_NAME, connection=client).job_ids


def deliveries(client: redis.Redis) -> int:
    return int(client.zcard(Keys.all))


def new_hook(**options: Any) -> InboundEvents:
    return InboundEvents(options.pop("endpoints", ENDPOINTS), ACCOUNT, **options)


# -- tests -----------------------------------------------------------------------------------


def test_one_event_per_im_across_batches(client: redis.Redis) -> None:
    hook = new_hook()
    for each in (INVITED, REPEAT, SECOND):
        apply(client, hook, each)
    events = received(client)
    assert sorted(e["data"]["text"] for e in events) == ["Hi Tosh", "second"]
    assert {e["data"]["from"]["uri"] for e in events} == {LENE}
    conv_ids = {e["data"]["conversation"] for e in events}
    assert len(conv_ids) == 1 and next(iter(conv_ids)).startswith("conv_")
    assert deliveries(client) == 4  # two IMs, two endpoints each
    jobs = job_ids(client)
    assert len(jobs) == 4 and len(set(jobs)) == 4
    assert client.hget(CURSOR, "cursor") is not None


def test_invitation_and_its_repeat_in_one_transaction(client: redis.Redis) -> None:
    apply(client, new_hook(), INVITED, REPEAT)
    assert [e["data"]["text"] for e in received(client)] == ["Hi Tosh"]
    assert len(job_ids(client)) == 2
    assert client.keys("inbound:first:*") == []  # the repeat consumed it


def test_the_same_notices_twice_stage_nothing_the_second_time(client: redis.Redis) -> None:
    apply(client, new_hook(), INVITED, REPEAT, SECOND)
    before = (sorted(job_ids(client)), deliveries(client), sorted(client.keys("webhooks:*")))
    hook = new_hook()  # a restarted poller re-reads the same batch
    apply(client, hook, INVITED, REPEAT, SECOND)
    for each in (INVITED, REPEAT, SECOND):
        apply(client, hook, each)
    assert (
        sorted(job_ids(client)),
        deliveries(client),
        sorted(client.keys("webhooks:*")),
    ) == before
    assert len(received(client)) == 2


def test_dedupe_state_survives_a_restart_between_invitation_and_repeat(
    client: redis.Redis,
) -> None:
    apply(client, new_hook(), INVITED)
    [pending] = client.keys("inbound:first:*")
    assert 0 < int(client.ttl(pending)) <= 86_400
    apply(client, new_hook(), REPEAT)
    apply(client, new_hook(), SECOND)
    assert sorted(e["data"]["text"] for e in received(client)) == ["Hi Tosh", "second"]
    assert all(0 < int(client.ttl(k)) <= 86_400 for k in client.keys("inbound:*"))


def test_discarded_transaction_stages_nothing_and_its_retry_stages_once(
    client: redis.Redis,
) -> None:
    hook = new_hook()
    apply(client, hook, INVITED, REPEAT, discard=True)
    assert client.keys("*") == []
    apply(client, hook, INVITED, REPEAT)  # the poller reads the same batch again
    assert [e["data"]["text"] for e in received(client)] == ["Hi Tosh"]
    assert len(job_ids(client)) == 2


def test_watch_abort_then_retry_on_the_same_pipeline(client: redis.Redis) -> None:
    hook = new_hook()
    sink = EventSink(client, ACCOUNT, inbound_hook=hook)
    notices = sink.notices(INVITED, BASE)
    with client.pipeline() as pipe:
        pipe.watch(CURSOR)
        pipe.multi()
        hook.begin_batch()
        sink.apply_state(notices, 1, BASE, pipe)
        client.hset(CURSOR, "cursor", "moved-by-someone-else")
        with pytest.raises(redis.WatchError):
            pipe.execute()
        assert job_ids(client) == [] and client.keys("inbound:*") == []
        pipe.watch(CURSOR)
        pipe.multi()
        hook.begin_batch()
        sink.apply_state(notices, 1, BASE, pipe)
        pipe.execute()
    assert [e["data"]["text"] for e in received(client)] == ["Hi Tosh"]
    assert len(job_ids(client)) == 2


def test_typing_reaches_only_subscribed_endpoints(client: redis.Redis) -> None:
    endpoints = [
        *ENDPOINTS,
        WebhookEndpoint(
            "ui",
            "https://ui.example/skype",
            [SECRET],
            frozenset({"message.received", "conversation.typing"}),
        ),
    ]
    hook = new_hook(endpoints=endpoints, typing_events=True)
    apply(client, hook, INVITED)
    apply(client, hook, batch([], [typing_event("added")]))
    apply(client, hook, batch([], [typing_event("added")]))  # no change, no event
    apply(client, hook, batch([], [typing_event("deleted")]))
    assert client.zcard(Keys.by_type("conversation.typing")) == 2
    assert client.zcard(Keys.by_endpoint("ui")) == 3  # the IM and two typing changes
    assert client.zcard(Keys.by_endpoint("alerts")) == 1


def test_a_new_pipeline_starts_a_new_batch_even_without_begin_batch(client: redis.Redis) -> None:
    hook = new_hook()
    sink = EventSink(client, ACCOUNT, inbound_hook=hook)
    notices = sink.notices(INVITED, BASE)
    with client.pipeline() as pipe:
        pipe.multi()
        sink.apply_state(notices, 1, BASE, pipe)
        pipe.reset()
    with client.pipeline() as pipe:
        pipe.multi()
        sink.apply_state(notices, 1, BASE, pipe)
        pipe.execute()
    assert [e["data"]["text"] for e in received(client)] == ["Hi Tosh"]


def test_refuses_a_pipeline_that_is_watching_outside_multi(client: redis.Redis) -> None:
    hook = new_hook()
    notice = EventSink(client, ACCOUNT).notices(INVITED, BASE)[0]
    with client.pipeline() as pipe:
        pipe.watch(CURSOR)
        with pytest.raises(ValueError, match="multi"):
            hook(pipe, notice, None)
    assert client.keys("*") == []


def test_the_ims_of_one_transaction_share_a_delivery_job_per_endpoint(
    client: redis.Redis,
) -> None:
    ims = batch([], [message_event(n, data_uri(f"im {n}")) for n in range(2, 9)])
    apply(client, new_hook(settings=WebhookSettings(batch_size=5)), ims)

    assert deliveries(client) == 14  # seven IMs, two endpoints
    jobs = Queue(QUEUE_NAME, connection=client).get_jobs()
    # Per endpoint, in the order the IMs came: a job of five tries, then one of two.
    assert [len(job.args[0]) for job in jobs] == [5, 2, 5, 2]
    staged = [client.hgetall(Keys.delivery(i)) for job in jobs for i in job.args[0]]
    bodies = [json.loads(client.get(Keys.event(d[b"event_id"].decode())) or b"") for d in staged]
    assert [b["data"]["text"] for b in bodies] == [f"im {n}" for n in range(2, 9)] * 2
    assert [d[b"endpoint_id"] for d in staged] == [b"alerts"] * 7 + [b"chatops"] * 7
