"""``bridge.net.headers`` reads every header block as ``http.client`` reads it.

Generated blocks mix plain ``Name: value`` lines (values with colons, control characters and
bytes above ASCII) with every kind of line the fast path must hand to the email parser (folded
lines, names with blanks or control characters, lines without a colon, a stray CR, a block cut
off without its blank line); the message, its payload and its defects, and what is left in the
stream must come out the same. Then an answer over a real socket, through the connection class
both UCWA and webhook requests use.
"""

from __future__ import annotations

import http.client
import io
import socket
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from urllib3.connection import HTTPConnection

from bridge.net.deadline import DeadlineHTTPConnection
from bridge.net.headers import FastHeadersResponse, parse_headers, plain_fields

NAME_BYTES = bytes(range(0x21, 0x7F)).replace(b":", b"")
names = st.binary(min_size=1, max_size=12).filter(lambda b: b":" not in b) | st.text(
    alphabet=NAME_BYTES.decode("ascii"), min_size=1, max_size=20
).map(str.encode)
# Pieces of values: control characters (some split lines elsewhere), colons, blanks, a stray CR,
# bytes above ASCII, and plain text.
TRICKY = [b"\x0b", b"\x0c", b"\x1c", b"\x85", b":", b"a:b", b" ", b"\t", b"\r", b"\xe9", b"\x00"]
values = st.lists(
    st.sampled_from(TRICKY)
    | st.binary(min_size=1, max_size=4)
    | st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=8).map(
        str.encode
    ),
    max_size=6,
).map(b"".join)
endings = st.sampled_from([b"\r\n", b"\n", b"\r\n", b"\r\n", b"\r\r\n"])
blanks = st.sampled_from([b"", b"", b" ", b"  ", b"\t", b" \t "])


@st.composite
def lines(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["plain"] * 6 + ["folded", "no colon", "raw"]))
    if kind == "plain":
        return draw(names) + b":" + draw(blanks) + draw(values) + draw(endings)
    if kind == "folded":
        return draw(st.sampled_from([b" ", b"\t"])) + draw(values) + draw(endings)
    if kind == "no colon":
        return draw(values).replace(b":", b"") + draw(endings)
    return draw(st.binary(max_size=40)) + b"\n"


@st.composite
def blocks(draw: st.DrawFn) -> bytes:
    body = b"".join(draw(st.lists(lines(), max_size=12)))
    end = draw(st.sampled_from([b"\r\n", b"\n", b"", b"Trailing: cut"]))
    return body + end + draw(st.sampled_from([b"", b"the body"]))


def read_both(block: bytes) -> tuple[object, object]:
    results: list[object] = []
    for parse in (http.client.parse_headers, parse_headers):
        stream = io.BytesIO(block)
        try:
            message = parse(stream)
        except http.client.HTTPException as exc:
            results.append(("raised", type(exc).__name__))
            continue
        results.append(
            (
                message.items(),
                message.get_payload(),
                [type(defect).__name__ for defect in message.defects],
                type(message).__name__,
                stream.read(),
            )
        )
    return results[0], results[1]


@given(blocks())
@settings(max_examples=600, deadline=None)
def test_every_generated_block_reads_as_http_client_reads_it(block: bytes) -> None:
    stdlib, fast = read_both(block)
    assert fast == stdlib


@pytest.mark.parametrize(
    "block",
    [
        b"Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{}",
        b'Location:/x\r\nX-Ms-diagnostics:  1000;reason="a b"  \r\n\r\n',
        b"Folded: a\r\n b\r\n\r\n",
        b"Bad Name: x\r\nLater: y\r\n\r\n",
        b"Sep: a\x85b\r\n\r\n",
        b"Tab:\tvalue\r\nEmpty:\r\n\r\n",
        b"Cut: without its blank line",
        b"Latin: caf\xe9\r\n\r\n",
        b"\r\n",
    ],
)
def test_known_shapes_read_as_http_client_reads_them(block: bytes) -> None:
    stdlib, fast = read_both(block)
    assert fast == stdlib


@pytest.mark.parametrize(
    "block",
    [
        b"Location: /ucwa/m/1\r\nContent-Length: 2\r\n\r\n",
        b'Server:x\nX-Ms-diagnostics: 1000;reason="a b"  \n\n',
        b"Content-Type: text/html; charset=utf-8\r\nEmpty:\r\n",
    ],
)
def test_plain_answers_take_the_fast_path(block: bytes) -> None:
    lines = http.client._read_headers(io.BytesIO(block))  # type: ignore[attr-defined]
    assert plain_fields(lines) == parse_headers(io.BytesIO(block)).items()


def test_the_limits_of_http_client_hold() -> None:
    most_headers: int = http.client._MAXHEADERS  # type: ignore[attr-defined]
    longest_line: int = http.client._MAXLINE  # type: ignore[attr-defined]
    many = b"".join(b"H%d: v\r\n" % i for i in range(most_headers + 1)) + b"\r\n"
    with pytest.raises(http.client.HTTPException, match="got more than"):
        parse_headers(io.BytesIO(many))
    long = b"Long: " + b"x" * (longest_line + 1) + b"\r\n\r\n"
    with pytest.raises(http.client.LineTooLong):
        parse_headers(io.BytesIO(long))


def test_the_standard_begin_still_looks_the_parser_up_by_name() -> None:
    """``FastHeadersResponse.begin`` is the standard library's code with this parser in its
    globals: a Python whose ``begin`` stopped calling ``parse_headers`` would silently read
    every answer the slow way."""
    assert "parse_headers" in http.client.HTTPResponse.begin.__code__.co_names
    assert FastHeadersResponse.begin.__code__ is http.client.HTTPResponse.begin.__code__
    assert FastHeadersResponse.begin.__globals__["parse_headers"] is parse_headers


def test_answers_over_a_socket_read_the_same_through_the_bridges_connection() -> None:
    """urllib3's connection as it comes against the one UCWA and webhook requests go through."""
    answers = [
        b"HTTP/1.1 201 Created\r\nLocation: /ucwa/m/1\r\nContent-Length: 2\r\n"
        b"Set-Cookie: a=1\r\nSet-Cookie: b=2\r\n\r\n{}",
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nFolded: a\r\n b\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
        b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n",
    ]
    seen = {}
    for connection_class in (HTTPConnection, DeadlineHTTPConnection):
        listener = socket.create_server(("127.0.0.1", 0))

        def serve(listener: socket.socket = listener) -> None:
            conn, _ = listener.accept()
            with conn:
                for answer in answers:
                    request = b""
                    while b"\r\n\r\n" not in request:
                        request += conn.recv(4096)
                    conn.sendall(answer)

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        connection = connection_class("127.0.0.1", listener.getsockname()[1], timeout=5)
        read = []
        for _ in answers:
            connection.request("GET", "/")
            response = connection.getresponse()
            original = response._original_response
            assert original is not None
            read.append(
                (
                    type(original).__name__,
                    response.status,
                    original.msg.items(),
                    list(response.headers.items()),
                    response.data,
                    original.will_close,
                )
            )
        connection.close()
        thread.join(5)
        listener.close()
        seen[connection_class] = read
    plain, bridge = seen[HTTPConnection], seen[DeadlineHTTPConnection]
    assert [entry[0] for entry in plain] == ["HTTPResponse"] * len(answers)
    assert [entry[0] for entry in bridge] == ["FastHeadersResponse"] * len(answers)
    assert [entry[1:] for entry in bridge] == [entry[1:] for entry in plain]
    assert plain[0][2] == [
        ("Location", "/ucwa/m/1"),
        ("Content-Length", "2"),
        ("Set-Cookie", "a=1"),
        ("Set-Cookie", "b=2"),
    ]
    assert plain[1][1:3] == (200, [("Folded", "a b"), ("Transfer-Encoding", "chunked")])
    assert plain[1][4] == b"ok" and plain[2][5] is True
