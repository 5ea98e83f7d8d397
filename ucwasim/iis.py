"""What the web server in front of UCWA does to every answer: media type and compression.

PayloadFormat.md names the media types; the traces in CreateAnApplication.md show the rest.
"""

from __future__ import annotations

import gzip
from http import HTTPStatus

from werkzeug.wrappers import Request, Response

from ucwasim.errors import UcwaError

JSON = "application/json"
VND_JSON = "application/vnd.microsoft.com.ucwa+json"  # PayloadFormat.md
XML_TYPES = ("application/xml", "application/vnd.microsoft.com.ucwa+xml")  # PayloadFormat.md
JSON_CHARSET = "; charset=utf-8"  # as the 201 of CreateAnApplication.md step 10

# Status lines as IIS writes them, in the reference's case rather than werkzeug's upper case.
# Shown in the reference: 200, 201, 204 (the traces throughout, e.g. CreateAnApplication.md,
# SendAnIM.md), 400 (AuthenticationInUCWA.md), 401 (CreateAnApplication.md step 4), 404
# (ExtendAPresenceSubscription.md), 304 (MeDashboard.md), 409 (ErrorsAndInformationalMessages.md),
# 410 (ApplicationDashboard.md), 502 (RootURL.md). The others are the phrases of the HTTP RFC
# that HTTP.md points to (RFC 2616, section 10), and RFC 6585 for 428 and 429.
REASON_PHRASES: dict[int, str] = {
    200: "OK",
    201: "Created",
    204: "No Content",
    302: "Found",
    304: "Not Modified",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    406: "Not Acceptable",
    408: "Request Timeout",
    409: "Conflict",
    410: "Gone",
    412: "Precondition Failed",
    413: "Request Entity Too Large",
    415: "Unsupported Media Type",
    428: "Precondition Required",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


def status_line(code: int) -> str:
    """``401 Unauthorized``: the code and its reason phrase (a fault may use any 4xx/5xx code:
    those outside the table take Python's registered phrase, or "Error")."""
    phrase = REASON_PHRASES.get(code)
    if phrase is None:
        try:
            phrase = HTTPStatus(code).phrase
        except ValueError:
            phrase = "Error"
    return f"{code} {phrase}"


def set_reason_phrase(response: Response) -> None:
    response.status = status_line(response.status_code)


def preferred_type(request: Request) -> str:
    """The payload media type the client prefers among those UCWA knows (JSON without Accept)."""
    if not request.headers.get("Accept"):
        return JSON
    return request.accept_mimetypes.best_match([JSON, VND_JSON, *XML_TYPES]) or JSON


def require_json(request: Request) -> None:
    """406 when the client asks for XML rather than JSON.

    The simulator speaks JSON only (UCWA-NOTES.md §1.1): XML, which a real server also
    offers (PayloadFormat.md), is refused with a message rather than answered as JSON.
    """
    if preferred_type(request) in XML_TYPES:
        raise UcwaError(
            406,
            "NotAcceptable",
            "This server answers in JSON only: ask for application/json or "
            f"{VND_JSON}; XML payloads are not supported.",
        )


def label_json(response: Response, request: Request) -> None:
    """Give a JSON answer the JSON media type the client asked for (real servers echo it)."""
    if response.mimetype == JSON and preferred_type(request) == VND_JSON:
        response.headers["Content-Type"] = VND_JSON + JSON_CHARSET


def accepts_gzip(request: Request) -> bool:
    return request.accept_encodings["gzip"] > 0


def compress(response: Response) -> None:
    """gzip the body, as IIS dynamic compression does ("Accept-Encoding: gzip, deflate" in the
    requests and "Vary: Accept-Encoding" in the answers of CreateAnApplication.md)."""
    response.vary.add("Accept-Encoding")
    if response.status_code in (204, 304) or "Content-Encoding" in response.headers:
        return
    if (response.mimetype or "").startswith("image/"):
        return  # already compressed: GetMyPhoto.md's JPEG comes without Content-Encoding
    body = response.get_data()
    if not body:
        return
    response.set_data(gzip.compress(body, compresslevel=6))
    response.headers["Content-Encoding"] = "gzip"
