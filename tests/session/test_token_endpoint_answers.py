"""The bridge's reading of the token endpoint's error answers, as the simulator sends them over
HTTP (AuthenticationInUCWA.md: "Passive grant type" and "Error conditions").

The bridge only ever asks for the password grant; these answers must still map to errors that
are never retried (a retry of bad credentials risks locking the account out).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from bridge.session.transport import UcwaTransport
from bridge.ucwa import errors as ue
from bridge.ucwa.auth import token_from_response
from bridge.ucwa.messages import HttpRequest
from ucwasim import SimConfig, Simulator, SimUser

BOT = "sip:bot@contoso.com"


@pytest.fixture()
def sim() -> Iterator[Simulator]:
    simulator = Simulator(SimConfig(users=[SimUser(BOT, "pw")])).start()
    try:
        yield simulator
    finally:
        simulator.stop()


def grant(sim: Simulator, *fields: tuple[str, str]) -> ue.UcwaError:
    url = f"{sim.base_url}/WebTicket/oauthtoken"
    transport = UcwaTransport()
    try:
        response = transport.send(HttpRequest("POST", url, form=fields), kind="token")
    finally:
        transport.close()
    with pytest.raises(ue.UcwaError) as raised:
        token_from_response(response, url, "127.0.0.1", datetime.now(UTC))
    return raised.value


def test_the_passive_grant_answer_is_credentials_rejected(sim: Simulator) -> None:
    error = grant(sim, ("grant_type", "urn:microsoft.rtc:passive"))
    assert type(error) is ue.CredentialsRejected and error.permanent
    assert (error.status, error.code) == (400, "invalid_grant")
    assert error.diagnostics is not None and error.diagnostics.startswith("28020;")
    assert error.body is not None and "PassiveAuth.aspx" in error.body


def test_a_grant_type_not_allowed_is_grant_not_supported(sim: Simulator) -> None:
    error = grant(sim, ("grant_type", "urn:microsoft.rtc:windows"))
    assert type(error) is ue.GrantNotSupported and error.permanent
    assert error.diagnostics is not None and error.diagnostics.startswith("28029;")


def test_bad_credentials_are_credentials_rejected(sim: Simulator) -> None:
    error = grant(
        sim, ("grant_type", "password"), ("username", "bot@contoso.com"), ("password", "nope")
    )
    assert type(error) is ue.CredentialsRejected and error.code == "invalid_grant"
