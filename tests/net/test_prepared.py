"""``prepared`` builds the request ``Session.request`` would for the bridge's sessions (no
environment, no auth, no parameters): the same method, URL, headers and body for any input,
or the same error. Generated input, compared with requests' own ``Session.prepare_request``."""

from __future__ import annotations

from typing import Any

import requests
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.net.prepared import prepared

_TOKEN = st.text(
    alphabet=st.sampled_from("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_"),
    min_size=1,
    max_size=12,
)
# Header values as callers could pass them, odd ones included (requests refuses some).
_VALUE = st.text(st.characters(codec="latin-1"), max_size=20)
_PATH = st.lists(st.text(max_size=8), max_size=4).map("/".join)
_URL = st.builds(
    lambda scheme, host, port, path, query: (
        f"{scheme}://{host}{port}/{path}" + (f"?{query}" if query is not None else "")
    ),
    st.sampled_from(["http", "https", "HTTP"]),
    st.sampled_from(["127.0.0.1", "receiver.example", "UCWA.Contoso.com", "[::1]", "bücher.de"]),
    st.sampled_from(["", ":8080", ":443"]),
    _PATH,
    st.none() | st.text(max_size=10),
)
_BODY = st.none() | st.binary(max_size=40) | st.text(max_size=20)


def _session(extra: dict[str, str], cookies: list[tuple[str, str]]) -> requests.Session:
    session = requests.Session()
    session.trust_env = False
    session.headers.update(extra)
    for name, value in cookies:
        session.cookies.set(name, value)
    return session


def _outcome(make: Any) -> tuple[Any, ...]:
    try:
        request = make()
    except Exception as exc:
        return ("error", type(exc))
    return ("request", request.method, request.url, dict(request.headers), request.body)


@settings(max_examples=300, deadline=None)
@given(
    method=st.sampled_from(["POST", "GET", "put", "DELETE"]),
    url=_URL,
    body=_BODY,
    headers=st.dictionaries(_TOKEN, _VALUE, max_size=4),
    session_headers=st.dictionaries(_TOKEN, _VALUE.filter(str.isprintable), max_size=3),
    cookies=st.lists(st.tuples(_TOKEN, _TOKEN), max_size=3),
)
def test_prepared_matches_what_session_request_prepares(
    method: str,
    url: str,
    body: Any,
    headers: dict[str, str],
    session_headers: dict[str, str],
    cookies: list[tuple[str, str]],
) -> None:
    session = _session(session_headers, cookies)
    theirs = _outcome(
        lambda: session.prepare_request(
            requests.Request(method, url, data=body, headers=dict(headers))
        )
    )
    ours = _outcome(lambda: prepared(session, method, url, body, headers))
    assert ours == theirs
