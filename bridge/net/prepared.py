"""A request prepared as ``requests.Session.request`` would, for sessions that take nothing from
the environment (``trust_env`` off), carry no auth and no query parameters: the session's headers
under the request's own, and the session's cookies.

``Session.request`` merges every session setting into every request again and checks each
against a typing protocol (slow on Python 3.11): a fifth to a third of a small POST's CPU.
Callers send the result with ``Session.send``, passing the session's ``verify`` themselves (the
setting ``Session.request`` would have merged in).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import requests
from requests.hooks import default_hooks
from requests.structures import CaseInsensitiveDict


def prepared(
    session: requests.Session, method: str, url: str, data: Any, headers: Mapping[str, str]
) -> requests.PreparedRequest:
    merged = CaseInsensitiveDict(session.headers)
    merged.update(headers)
    request = requests.PreparedRequest()
    request.prepare(
        method=method.upper(),
        url=url,
        data=data,
        headers=merged,
        cookies=session.cookies,
        hooks=default_hooks(),
    )
    return request
