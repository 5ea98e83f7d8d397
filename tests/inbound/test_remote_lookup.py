"""Who is at the other end of a conversation an event names: read from the registry for the
conversations the batch names only, in one round trip however many conversations are live.

Reading every live conversation per batch (a GET each) was most of the poller's CPU under load.
Real Redis, the real sink, batches parsed from UCWA-shaped JSON.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
import redis

from bridge.inbound.event_sink import EventSink
from bridge.session.conversations import Conversation, ConversationRegistry
from bridge.ucwa.notices import ConversationChanged, InvitationOutcome
from tests.inbound.test_staging import ACCOUNT, BASE, COMM, CONV, LENE, batch

OTHER = f"{COMM}/conversations/ff01"


def outgoing_completed(conversation: str, operation: str = "op-1") -> dict[str, Any]:
    """Our invitation succeeded; the event names the conversation but not who accepted."""
    href = f"{COMM}/messagingInvitations/{conversation.rsplit('/', 1)[-1]}"
    return {
        "link": {"rel": "messagingInvitation", "href": href},
        "type": "completed",
        "status": "Success",
        "_embedded": {
            "messagingInvitation": {
                "direction": "Outgoing",
                "state": "Connected",
                "operationId": operation,
                "_links": {"self": {"href": href}, "conversation": {"href": conversation}},
            }
        },
    }


def conversation_updated(conversation: str) -> dict[str, Any]:
    return {
        "link": {"rel": "conversation", "href": conversation},
        "type": "updated",
        "_embedded": {"conversation": {"state": "Connected", "_links": {}}},
    }


def keep(registry: ConversationRegistry, href: str, remote: str, state: str) -> None:
    conv = Conversation(
        id=registry.id_for(BASE + href),
        href=BASE + href,
        generation=1,
        remote=remote,
        state=state,
        created_at=time.time(),
        last_activity=time.time(),
    )
    with registry.client.pipeline() as pipe:
        registry.save(conv, pipe)
        pipe.execute()


def calls(client: redis.Redis) -> dict[str, int]:
    return {k[len("cmdstat_") :]: int(v["calls"]) for k, v in client.info("commandstats").items()}


@pytest.mark.parametrize("others", [0, 300])
def test_remotes_come_from_one_read_whatever_the_number_of_live_conversations(
    redis_client: redis.Redis, others: int
) -> None:
    sink = EventSink(redis_client, ACCOUNT)
    keep(sink.registry, CONV, LENE, "Connected")
    for n in range(others):
        keep(sink.registry, f"{COMM}/conversations/x{n}", f"sip:user{n}@contoso.com", "Connected")
    events = batch([outgoing_completed(CONV), conversation_updated(CONV)], [])
    before = calls(redis_client)

    notices = sink.notices(events, BASE)

    after = calls(redis_client)
    spent = {k: n - before.get(k, 0) for k, n in after.items() if n != before.get(k, 0)}
    spent.pop("info", None)
    assert spent == {"mget": 1}
    outcome = next(n for n in notices if isinstance(n, InvitationOutcome))
    changed = next(n for n in notices if isinstance(n, ConversationChanged))
    assert outcome.remote_uri == LENE and changed.remote_uri == LENE


def test_a_conversation_no_longer_live_gives_no_remote_and_others_are_not_mixed_up(
    redis_client: redis.Redis,
) -> None:
    sink = EventSink(redis_client, ACCOUNT)
    keep(sink.registry, CONV, LENE, "Disconnected")
    keep(sink.registry, OTHER, "sip:someone@contoso.com", "Connected")

    notices = sink.notices(batch([outgoing_completed(CONV), conversation_updated(OTHER)], []), BASE)

    outcome = next(n for n in notices if isinstance(n, InvitationOutcome))
    changed = next(n for n in notices if isinstance(n, ConversationChanged))
    assert outcome.remote_uri is None
    assert changed.remote_uri == "sip:someone@contoso.com"


def test_an_absolute_href_in_an_event_finds_the_same_conversation(
    redis_client: redis.Redis,
) -> None:
    sink = EventSink(redis_client, ACCOUNT)
    keep(sink.registry, CONV, LENE, "Connected")

    notices = sink.notices(batch([conversation_updated(BASE + CONV)], []), BASE)

    assert [n.remote_uri for n in notices if isinstance(n, ConversationChanged)] == [LENE]


def test_an_unusable_href_sets_its_event_aside_and_the_rest_still_finds_remotes(
    redis_client: redis.Redis,
) -> None:
    sink = EventSink(redis_client, ACCOUNT)
    keep(sink.registry, CONV, LENE, "Connected")
    bad = conversation_updated("https://lyncweb.contoso.com:99999/ucwa/x")

    notices = sink.notices(batch([bad, conversation_updated(CONV)], []), BASE)

    assert [n.remote_uri for n in notices if isinstance(n, ConversationChanged)][-1] == LENE
