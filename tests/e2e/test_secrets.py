"""Known secrets through a full send and receive: none of them may show up anywhere a user,
an operator or a log shipper can read, except the one Redis hash that holds the session token.

Secrets: the UCWA password, every bearer token the simulator issued (a forced renewal makes
more than one), the API key and the webhook signing secret. Places: every process log (at
DEBUG), every role's /metrics, every API answer including error bodies and the webhook admin
API, and every Redis key name and value (RQ's compressed job payloads unpacked).
"""

from __future__ import annotations

import base64
import threading
import zlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import redis
import requests

from bridge.config.embedded_redis import free_port
from tests.e2e.conftest import (
    ALICE,
    API_KEY,
    BOT,
    BOT_PASSWORD,
    SECRET,
    Bridge,
    MakeBridge,
    events,
    wait_for,
    webhook_env,
)
from tests.webhooks.receiver import Reply, WebhookReceiver
from ucwasim import Simulator

SESSION_STORE = f"session:{BOT}"


class TokenWatch:
    """Every bearer token the simulator issues while the test runs (read from its own state)."""

    def __init__(self, sim: Simulator) -> None:
        self.sim = sim
        self.seen: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            with self.sim.world.lock:
                self.seen.update(self.sim.world.tokens)

    def __enter__(self) -> TokenWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def redis_contents(client: redis.Redis, skip: str) -> Iterator[tuple[str, bytes]]:
    """(key, blob) for every key name and value, zlib-compressed blobs also unpacked."""
    for raw_key in client.scan_iter(count=500):
        key = raw_key.decode(errors="replace")
        yield key, raw_key
        if key == skip:
            continue
        kind = client.type(raw_key).decode()
        values: list[bytes] = []
        if kind == "string":
            values = [client.get(raw_key) or b""]
        elif kind == "hash":
            for field, value in client.hgetall(raw_key).items():
                values += [field, value]
        elif kind == "list":
            values = list(client.lrange(raw_key, 0, -1))
        elif kind == "set":
            values = list(client.smembers(raw_key))
        elif kind == "zset":
            values = list(client.zrange(raw_key, 0, -1))
        elif kind == "stream":
            for _id, entry in client.xrange(raw_key):
                for field, value in entry.items():
                    values += [field, value]
        for value in values:
            yield key, value
            unpacked = _unzipped(value)
            if unpacked is not None:
                yield key, unpacked


def _unzipped(value: bytes) -> bytes | None:
    try:
        return zlib.decompress(value)
    except zlib.error:
        return None


def test_no_secret_leaks_through_logs_metrics_answers_or_redis(
    make_bridge: MakeBridge, receiver: WebhookReceiver
) -> None:
    # the first webhook attempt fails, so the delivery log holds an error too
    receiver.script(Reply(status=500, body=b"receiver trouble"))
    bridge: Bridge = make_bridge(
        start=False, env={**webhook_env(receiver), "BRIDGE_LOG_LEVEL": "DEBUG"}
    )
    ports = {"poller": free_port(), "worker": free_port()}
    answers: list[requests.Response] = []

    def call(method: str, path: str, body: object = None, **headers: str) -> requests.Response:
        response = bridge.api(method, path, body, headers or None)
        answers.append(response)
        return response

    with TokenWatch(bridge.sim) as tokens:
        bridge.start_api()
        bridge.start_poller(env={"BRIDGE_METRICS_PORT": str(ports["poller"])})
        bridge.start_worker(env={"BRIDGE_METRICS_PORT": str(ports["worker"])})

        sent = [call("POST", "/messages", {"to": ALICE, "text": "cold"}).json()["id"]]
        sent.append(call("POST", "/messages", {"to": ALICE, "text": "warm"}).json()["id"])
        sent.append(call("POST", "/messages", {"to": "sip:decliner@contoso.com", "text": "no"}))
        sent[-1] = sent[-1].json()["id"]
        bridge.wait_final(*sent)

        # the bot's token is revoked: the next send has to sign in again
        first_tokens = set(tokens.seen)
        bridge.sim_call("POST", "/_sim/expire", {"user": BOT, "what": "token"})
        renewed = call("POST", "/messages", {"to": ALICE, "text": "after renewal"}).json()["id"]
        sent.append(renewed)
        assert bridge.wait_final(*sent)[renewed]["status"] == "delivered"
        # read from the simulator's state every 20 ms by a thread a loaded machine may hold up
        wait_for(lambda: bool(tokens.seen - first_tokens), 10, "the forced renewal's new token")

        bridge.sim_call("POST", f"/_sim/users/{ALICE}/messages", {"to": BOT, "text": "inbound"})
        wait_for(
            lambda: len(events(receiver, "message.received")) == 1,
            20,
            "the inbound event after one failed attempt",
            bridge.logs,
        )

    # error answers: a wrong key, a bad body, an unknown message, a bad header
    answers.append(
        requests.post(
            bridge.api_url + "/messages",
            json={"to": ALICE, "text": "x"},
            headers={"Authorization": f"Bearer {API_KEY[:-1]}Z"},
            timeout=5,
        )
    )
    call("POST", "/messages", {"to": "not-a-sip-uri", "text": 5})
    # A message due in an hour: its release job stays in Redis for the scan below (every other
    # job is gone once its message is final).
    later = datetime.now(UTC) + timedelta(hours=1)
    call("POST", "/messages", {"to": ALICE, "text": "later", "send_at": later.isoformat()})
    call("GET", "/messages/does-not-exist")
    call("POST", "/messages", {"to": ALICE, "text": "x"}, **{"Idempotency-Key": ""})
    for message_id in sent:
        call("GET", f"/messages/{message_id}")
    for path in ("/webhooks/deliveries", "/webhooks/endpoints", "/readyz", "/healthz"):
        call("GET", path)
    assert {r.status_code for r in answers} >= {202, 200, 401, 404, 422}

    secrets = {
        "UCWA password": BOT_PASSWORD,
        "API key": API_KEY,
        "webhook secret": SECRET,
        "webhook signing key": base64.b64decode(SECRET.removeprefix("whsec_")).decode(),
        **{f"bearer token {n}": token for n, token in enumerate(sorted(tokens.seen))},
    }
    assert len(tokens.seen) >= 2

    places: dict[str, bytes] = {"logs": bridge.full_logs().encode()}
    for number, answer in enumerate(answers):
        head = "".join(f"{k}: {v}\n" for k, v in answer.headers.items())
        places[f"answer {number} {answer.request.method} {answer.url}"] = (
            head.encode() + answer.content
        )
    places["api metrics"] = requests.get(bridge.api_url + "/metrics", timeout=5).content
    for role, port in ports.items():
        metrics = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
        places[f"{role} metrics"] = metrics.content
    store = bridge.redis()
    for key, blob in redis_contents(store, skip=SESSION_STORE):
        places[f"redis {key}"] = places.get(f"redis {key}", b"") + b"\n" + blob

    leaks = [
        f"{name} in {place}"
        for name, secret in secrets.items()
        for place, blob in places.items()
        if secret.encode() in blob
    ]
    assert leaks == []

    # the checks can see a secret: the one place allowed to hold the token does hold it
    assert store.hget(SESSION_STORE, "token").decode() in tokens.seen
    assert any(key.startswith("rq:job:") for key in (p.removeprefix("redis ") for p in places))
