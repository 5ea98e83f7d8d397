"""BRIDGE_RECORD_TTL_S reaches every role: the keys workers and the poller keep beside a message
record (its job counter, its watchdog counter) expire with it, not a week later."""

from __future__ import annotations

import redis

from bridge.cli import poller_settings
from bridge.config.environment import read_environment
from bridge.config.settings import Settings
from bridge.outbound.messages import MessageRecord, MessageStore
from bridge.outbound.outcomes import Outbound
from workers.poller import PollerSettings
from workers.send import build_sender

ENV = {
    "BRIDGE_UCWA_DISCOVERY_URL": "https://lyncdiscover.contoso.com",
    "BRIDGE_UCWA_USERNAME": "sip:bot@contoso.com",
    "BRIDGE_UCWA_PASSWORD": "Bot-Passw0rd",
    "BRIDGE_RECORD_TTL_S": "3600",
}


def test_the_worker_and_the_poller_read_the_record_ttl(redis_url: str) -> None:
    env = {**ENV, "BRIDGE_REDIS_URL": redis_url}
    sender = build_sender(Settings.from_env("worker", env))
    assert sender.store.record_ttl_s == 3600
    knobs = poller_settings(read_environment("poller", env))
    assert isinstance(knobs, PollerSettings) and knobs.record_ttl_s == 3600


def test_a_records_job_counter_expires_with_the_record(redis_client: redis.Redis) -> None:
    store = MessageStore(redis_client, record_ttl_s=3600)
    record = MessageRecord.new(
        to="sip:alice@contoso.com", conversation=None, text="hi", html=None, subject=None,
        importance="Normal", validity_s=60,
    )  # fmt: skip
    with redis_client.pipeline() as pipe:
        pipe.multi()
        store.create(record, pipe)
        pipe.execute()
    Outbound(redis_client, store).enqueue_send(record.id)
    assert 0 < redis_client.ttl(f"msg:{record.id}:runs") <= 3600
    assert 0 < redis_client.ttl(f"msg:{record.id}") <= 3600
