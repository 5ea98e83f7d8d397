"""POST batch (BatchingRequests.md): multipart/batching in, one HTTP response per part out.

Parts run in order through the normal pipeline; events and nested batches are refused per part.
"""

from __future__ import annotations

import uuid
from urllib.parse import urlsplit

from werkzeug.test import EnvironBuilder
from werkzeug.wrappers import Request, Response

from ucwasim import iis
from ucwasim.context import NO_CACHE, Ctx, unsupported_media_type
from ucwasim.errors import UcwaError, bad_parameter

MAX_PARTS = 100


def _parse_part(part: str) -> tuple[str, str, dict[str, str], str]:
    _, _, http = part.partition("\r\n\r\n")
    head, _, body = http.partition("\r\n\r\n")
    lines = head.split("\r\n")
    try:
        method, target, _ = lines[0].split(" ", 2)
    except ValueError as exc:
        raise bad_parameter("batch", "A batch part is not an HTTP request.") from exc
    headers = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip()] = value.strip()
    url = urlsplit(target)
    return method.upper(), url.path + (f"?{url.query}" if url.query else ""), headers, body


def _render(response: Response) -> str:
    lines = [f"HTTP/1.1 {iis.status_line(response.status_code)}"]
    lines += [f"{k}: {v}" for k, v in response.headers.items()]
    return "\r\n".join(lines) + "\r\n\r\n" + response.get_data(as_text=True)


def run_batch(ctx: Ctx) -> Response:
    boundary = ctx.request.mimetype_params.get("boundary")
    if ctx.media_type() != "multipart/batching" or not boundary:
        raise unsupported_media_type(ctx.media_type() or "none")
    text = ctx.body_bytes().decode("utf-8", errors="replace").replace("\r\n", "\n")
    text = text.replace("\n", "\r\n")
    chunks = text.split("--" + boundary)
    parts = [c.strip("\r\n") for c in chunks[1:] if not c.startswith("--")]
    parts = [p for p in parts if p]
    if len(parts) > MAX_PARTS:
        raise UcwaError(429, "TooManyRequests", f"A batch may hold at most {MAX_PARTS} requests.")
    assert ctx.dispatch is not None
    out_boundary = str(uuid.uuid4())
    rendered = []
    for part in parts:
        method, target, headers, body = _parse_part(part)
        path = target.split("?")[0].lower()
        if path.endswith("/events") or path.endswith("/batch"):
            response = Response(
                '{"code":"BadRequest","message":"Not allowed in a batch."}',
                status=400,
                content_type="application/json",
            )
        else:
            headers.setdefault("Authorization", ctx.request.headers.get("Authorization", ""))
            builder = EnvironBuilder(
                path=target, method=method, headers=list(headers.items()), data=body
            )
            response = ctx.dispatch(Request(builder.get_environ()))
        rendered.append(
            f"--{out_boundary}\r\nContent-Type: application/http; msgtype=response\r\n\r\n"
            + _render(response)
        )
    payload = "\r\n".join(rendered) + f"\r\n--{out_boundary}--\r\n"
    # BatchingRequests.md's batch answer: "Expires: -1", "Cache-Control: no-cache", "Pragma".
    return Response(
        payload,
        headers=NO_CACHE,
        content_type=f'multipart/batching; boundary="{out_boundary}"',
    )
