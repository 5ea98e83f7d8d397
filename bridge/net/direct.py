"""A request sent to a urllib3 pool as a ``requests`` adapter sends it, without ``requests``'
session layer on top (its settings merged into every request, cookies, hooks, its ``Response``):
no redirect followed, no retry, the body left for the caller to read. Failures raise as
``requests`` raises them, so callers tell "never sent" from "may have been processed" the same
way on either path.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import requests
from urllib3 import BaseHTTPResponse, HTTPConnectionPool, Timeout
from urllib3.exceptions import (
    ClosedPoolError,
    ConnectTimeoutError,
    HTTPError,
    NewConnectionError,
    ProtocolError,
    ReadTimeoutError,
    SSLError,
)


def send(
    pool: HTTPConnectionPool,
    method: str,
    path: str,
    body: Any,
    headers: Mapping[str, str],
    connect_s: float,
    read_s: float,
) -> BaseHTTPResponse:
    """The answer, its body unread (``finish`` it). Raises ``requests``' exceptions: a
    connection that never opened is a ``ConnectionError`` caused by urllib3's
    ``NewConnectionError``; one that broke after the request went out, a ``ConnectionError``
    caused by a ``ProtocolError``."""
    try:
        return pool.urlopen(
            method,
            path,
            body=body,
            headers=headers,
            redirect=False,
            assert_same_host=False,
            preload_content=False,
            decode_content=False,
            retries=False,
            timeout=Timeout(connect=connect_s, read=read_s),
        )
    except (NewConnectionError, ClosedPoolError) as exc:  # a subclass of ConnectTimeoutError
        raise requests.ConnectionError(exc) from exc
    except ConnectTimeoutError as exc:
        raise requests.ConnectTimeout(exc) from exc
    except ReadTimeoutError as exc:
        raise requests.ReadTimeout(exc) from exc
    except SSLError as exc:
        raise requests.exceptions.SSLError(exc) from exc
    except (ProtocolError, OSError) as exc:
        raise requests.ConnectionError(exc) from exc
    except HTTPError as exc:
        raise requests.RequestException(exc) from exc


def finish(response: BaseHTTPResponse) -> None:
    """As ``requests.Response.close``: a body read to its end already gave the connection back
    to the pool; one cut short closes it (an endless body is never drained)."""
    response.close()
    response.release_conn()
