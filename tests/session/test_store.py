"""The published session as workers read it, on real Redis."""

from __future__ import annotations

import pytest
import redis

from bridge.session.store import SessionStore, SessionUnavailable

ACCOUNT = "sip:bot@contoso.com"


@pytest.mark.parametrize("state", ["down", "rebuilding", "credentials_rejected", "ready"])
def test_a_state_set_before_any_session_was_published_reads_as_unavailable(
    redis_client: redis.Redis, state: str
) -> None:
    store = SessionStore(redis_client, ACCOUNT)
    store.set_state(state)  # a poller whose first bootstrap failed
    redis_client.set(f"poller:lease:{ACCOUNT}", "holder")

    loaded = store.load()
    assert loaded is not None and loaded.state == state
    with pytest.raises(SessionUnavailable):
        store.require()
