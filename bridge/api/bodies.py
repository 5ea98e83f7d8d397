"""The HTML a message body becomes: ``html`` sanitised, or ``markdown`` rendered, then
sanitised; refused (422 naming the field) when nothing visible, or too much, is left."""

from __future__ import annotations

from typing import Protocol

from bridge.api.markdown import markdown_to_html
from bridge.api.problems import VALIDATION, FieldError, Problem
from bridge.api.schemas import INVALID_CHARACTERS, Limits
from bridge.ucwa.datauri import html_to_text
from bridge.ucwa.html_policy import sanitize_outgoing_html
from bridge.ucwa.text import unencodable


class MessageBody(Protocol):
    @property
    def html(self) -> str | None: ...
    @property
    def markdown(self) -> str | None: ...


def outgoing_html(body: MessageBody, limits: Limits) -> str | None:
    """What will be sent as HTML, or None for a text message."""
    if body.markdown is not None:
        # Sent as HTML: the record, the answer and the recipient see what the markdown became.
        return _sanitized(markdown_to_html(body.markdown), limits, "markdown")
    return None if body.html is None else _sanitized(body.html, limits)


def _sanitized(html: str, limits: Limits, field: str = "html") -> str:
    """What will be sent: the sanitised HTML, or its text where a conversation takes no HTML.

    Sanitising escapes (``<`` becomes ``&lt;``), so the result is measured again: UCWA refuses
    a message over the limit only after the bridge has accepted it. Errors name ``field``, the
    body form the HTML came from.
    """
    clean = sanitize_outgoing_html(html)
    # Character references are decoded by sanitising: "&#27;" comes out as the ESC character.
    refused = unencodable(clean)
    if refused is not None:
        message = f"once sanitised {refused}"
        raise Problem(
            VALIDATION,
            f"{field}: {message}",
            errors=[FieldError(field, message, INVALID_CHARACTERS)],
        )
    text = html_to_text(clean)
    if not text:
        message = "nothing Skype for Business can show is left after sanitising"
        raise Problem(
            VALIDATION, f"{field}: {message}", errors=[FieldError(field, message, "blank")]
        )
    longest = max(len(clean), len(text))
    if longest > limits.max_message_chars:
        message = (
            f"is {longest} characters after sanitising, over the limit of "
            f"{limits.max_message_chars}"
        )
        raise Problem(
            VALIDATION, f"{field}: {message}", errors=[FieldError(field, message, "too_long")]
        )
    return clean
