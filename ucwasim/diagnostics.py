"""The ``X-Ms-diagnostics`` header values the simulator sends, each from a documented source.

Clients should log them and never branch on them (AuthenticationInUCWA.md, "Error conditions").
"""

from __future__ import annotations

# code → reason text, with where each one is documented.
REASONS: dict[int, str] = {
    # AuthenticationInUCWA.md ("Passive grant type" response); real 401 traces carry the same.
    28020: "No valid security token.",
    # AuthenticationInUCWA.md ("Error conditions": 400 unsupported_grant_type).
    28029: "Authentication type not allowed.",
    # Microsoft blog "UCWA with directors or multiple pools": 500 on POST applications when a
    # token of another pool is used (UCWA-NOTES.md §2.1).
    28032: "The web ticket is invalid.",
    # OfficeDev/skype-docs issue 347: intermittent 403 InvalidToken on Online (UCWA-NOTES.md §2.3).
    28055: "The OAuth token is invalid.",
}

NO_VALID_TOKEN = 28020
AUTH_TYPE_NOT_ALLOWED = 28029


def header(code: int, source: str) -> str:
    """``28020;source="fe.contoso.com";reason="No valid security token."``."""
    return f'{code};source="{source}";reason="{REASONS[code]}"'
