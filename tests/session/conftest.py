"""The simulator the session tests sign in to: one user, the bot, at 1/20 of real time."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ucwasim import SimConfig, Simulator, SimUser

BOT = "sip:bot@contoso.com"
PASSWORD = "Bot-Passw0rd"


@pytest.fixture()
def sim() -> Iterator[Simulator]:
    simulator = Simulator(SimConfig(users=[SimUser(BOT, PASSWORD)], time_scale=0.05)).start()
    try:
        yield simulator
    finally:
        simulator.stop()
