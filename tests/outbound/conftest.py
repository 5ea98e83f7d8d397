"""Fixtures shared by the outbound tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.outbound.fake_ucwa import Ucwa, running_ucwa


@pytest.fixture()
def ucwa() -> Iterator[Ucwa]:
    """A fake UCWA server on an ephemeral port, for one test."""
    with running_ucwa() as server:
        yield server
