"""Webhook deliveries on kept-alive connections: one connection per vetted address, a DNS answer
that changes is vetted again (once per job) and never rides the old connection, a reset
kept-alive connection is tried once more on a new one. Real Redis, real RQ worker, real
receivers."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator

import pytest
import redis

from bridge.webhooks import ssrf
from bridge.webhooks.errors import AddressResolutionError
from tests.webhooks.harness import attempts, configure, new_secret, publish, record, run_deliveries
from tests.webhooks.receiver import Reply, WebhookReceiver
from tests.webhooks.test_batches import stage

HOST = "hooks.example.com"


@pytest.fixture()
def kept_alive() -> Iterator[WebhookReceiver]:
    with WebhookReceiver(keep_alive=True) as server:
        yield server


def endpoint(url: str, allow_private: bool = True) -> dict[str, object]:
    return {"id": "ops", "url": url, "secrets": [new_secret()], "allow_private": allow_private}


def answers(monkeypatch: pytest.MonkeyPatch, *addresses: str) -> list[str]:
    """``HOST`` resolves to the given addresses, one per lookup; returns the lookups made."""
    queue = list(addresses)
    asked: list[str] = []

    def resolve(host: str, port: int) -> list[ssrf.IPAddress]:
        assert host == HOST
        asked.append(queue[0])
        return [ipaddress.ip_address(queue.pop(0) if len(queue) > 1 else queue[0])]

    monkeypatch.setattr(ssrf, "resolve", resolve)
    return asked


def test_deliveries_to_one_receiver_share_a_connection(
    redis_client: redis.Redis, kept_alive: WebhookReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    endpoints = configure(monkeypatch, endpoint(kept_alive.url()))
    ids = [publish(redis_client, endpoints, data={"n": n})[1][0] for n in range(3)]
    run_deliveries(redis_client)
    assert [record(redis_client, i).status for i in ids] == ["succeeded"] * 3
    assert len(kept_alive.received) == 3
    assert kept_alive.connections == 1


def test_a_changed_dns_answer_gets_a_connection_to_the_new_address(
    redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    with (
        WebhookReceiver(keep_alive=True) as first,
        WebhookReceiver(keep_alive=True, host="127.0.0.2", port=first.port) as second,
    ):
        asked = answers(monkeypatch, "127.0.0.1", "127.0.0.2")
        endpoints = configure(monkeypatch, endpoint(f"http://{HOST}:{first.port}/hook"))
        _, [one] = publish(redis_client, endpoints)
        run_deliveries(redis_client)
        _, [two] = publish(redis_client, endpoints)
        run_deliveries(redis_client)
        assert asked == ["127.0.0.1", "127.0.0.2"]  # looked up again for each job
        assert [record(redis_client, i).status for i in (one, two)] == ["succeeded"] * 2
        # The kept-alive connection to the first address carried nothing more.
        assert len(first.received) == 1 and len(second.received) == 1
        assert first.received[0].headers["host"] == f"{HOST}:{first.port}"
        assert second.received[0].headers["host"] == f"{HOST}:{first.port}"


def test_a_name_that_now_resolves_to_a_private_address_is_refused_despite_a_live_connection(
    redis_client: redis.Redis, kept_alive: WebhookReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The receiver on 127.0.0.1 stands in for a public address; 10.0.0.7 is what DNS says next.
    real = ssrf.forbidden_category
    monkeypatch.setattr(
        ssrf,
        "forbidden_category",
        lambda a: None if str(a) == "127.0.0.1" else real(a),
    )
    answers(monkeypatch, "127.0.0.1", "10.0.0.7")
    url = f"http://{HOST}:{kept_alive.port}/hook"
    endpoints = configure(monkeypatch, endpoint(url, allow_private=False))
    _, [one] = publish(redis_client, endpoints)
    run_deliveries(redis_client)
    _, [two] = publish(redis_client, endpoints)
    run_deliveries(redis_client)

    assert record(redis_client, one).status == "succeeded"
    refused = record(redis_client, two)
    assert (refused.status, refused.reason) == ("dead", "ssrf_blocked")
    [attempt] = attempts(redis_client, two)
    assert "10.0.0.7" in attempt["error"] and "private" in attempt["error"]
    assert len(kept_alive.received) == 1


def test_a_kept_alive_connection_reset_before_the_answer_is_tried_once_more(
    redis_client: redis.Redis, kept_alive: WebhookReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    endpoints = configure(monkeypatch, endpoint(kept_alive.url()))
    publish(redis_client, endpoints)
    run_deliveries(redis_client)
    kept_alive.script(Reply(status=0, reset=True))  # the next request on it gets a reset
    _, [two] = publish(redis_client, endpoints)
    run_deliveries(redis_client)

    assert record(redis_client, two).status == "succeeded"
    [attempt] = attempts(redis_client, two)  # one attempt: the repeat happened inside it
    assert attempt["status_code"] == 200
    assert [r.status for r in kept_alive.received] == [200, 0, 200]
    assert kept_alive.connections == 2
    # The same signed event twice, as at-least-once delivery allows: one webhook-id.
    assert (
        kept_alive.received[1].headers["webhook-id"] == kept_alive.received[2].headers["webhook-id"]
    )


def test_a_job_of_several_deliveries_resolves_its_host_once(
    redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A lookup per job, not per delivery (a batch lasts at most ``batch_budget_s``): the next
    job looks the name up again and goes to the address it finds then."""
    with (
        WebhookReceiver(keep_alive=True) as first,
        WebhookReceiver(keep_alive=True, host="127.0.0.2", port=first.port) as second,
    ):
        asked = answers(monkeypatch, "127.0.0.1", "127.0.0.2")
        endpoints = configure(monkeypatch, endpoint(f"http://{HOST}:{first.port}/hook"))
        earlier, [job] = stage(redis_client, endpoints, 4)
        run_deliveries(redis_client)
        later, _ = stage(redis_client, endpoints, 3)
        run_deliveries(redis_client)

        assert job is not None
        assert asked == ["127.0.0.1", "127.0.0.2"]
        assert [record(redis_client, i).status for i in earlier + later] == ["succeeded"] * 7
        assert (len(first.received), len(second.received)) == (4, 3)


def test_a_refused_address_refuses_every_delivery_of_its_job_after_one_lookup(
    redis_client: redis.Redis, kept_alive: WebhookReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked = answers(monkeypatch, "10.0.0.7")
    url = f"http://{HOST}:{kept_alive.port}/hook"
    endpoints = configure(monkeypatch, endpoint(url, allow_private=False))
    ids, _ = stage(redis_client, endpoints, 3)
    run_deliveries(redis_client)

    assert asked == ["10.0.0.7"]
    for delivery_id in ids:
        refused = record(redis_client, delivery_id)
        assert (refused.status, refused.reason) == ("dead", "ssrf_blocked")
        [attempt] = attempts(redis_client, delivery_id)
        assert "10.0.0.7" in attempt["error"]
    assert kept_alive.received == []


def test_a_name_that_does_not_resolve_costs_its_job_one_lookup(
    redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every delivery of the job is tried and fails with the lookup's error after one lookup;
    their retries, jobs of their own, look up again."""
    asked: list[str] = []

    def resolve(host: str, port: int) -> list[ssrf.IPAddress]:
        asked.append(host)
        raise AddressResolutionError(f"cannot resolve {host}: no such name")

    monkeypatch.setattr(ssrf, "resolve", resolve)
    endpoints = configure(monkeypatch, endpoint(f"http://{HOST}:9/hook"))
    ids, _ = stage(redis_client, endpoints, 3)
    run_deliveries(redis_client)

    tries = [attempts(redis_client, delivery_id) for delivery_id in ids]
    # One lookup for the batch's three first tries; each later try is a job of its own.
    assert len(asked) == 1 + sum(len(made) - 1 for made in tries)
    for made in tries:
        assert made and all(
            a["error"].startswith(f"dns_error: cannot resolve {HOST}") for a in made
        )
