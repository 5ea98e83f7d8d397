"""Which account a message goes from: the request's ``from``, the key's binding, the default.

A key bound to accounts (``BRIDGE_API_KEYS`` entry ``key@bot|alerts``) may send from those only
(403 naming ``from``), and so does an account that is not configured. A reply into
a conversation goes from the account whose application holds that conversation.
"""

from __future__ import annotations

from bridge.api.auth import Caller
from bridge.api.problems import ACCOUNT_FORBIDDEN, VALIDATION, FieldError, Problem
from bridge.config.accounts import DEFAULT_ID, Accounts

FIELD = "from"


def choose_account(
    accounts: Accounts,
    caller: Caller,
    requested: str | None,
    conversation_account: str | None = None,
) -> str:
    """The id of the account to send as, or a ``Problem`` naming ``from``.

    ``conversation_account`` is the account of the conversation a reply goes into, if any.
    """
    known = accounts.ids or (DEFAULT_ID,)
    if requested is not None and requested not in known:
        # A 403 like a key's unbound account: the document cannot list a deployment's ids.
        usable = [a for a in known if caller.accounts is None or a in caller.accounts]
        raise Problem(
            ACCOUNT_FORBIDDEN,
            f"no account {requested!r} is configured",
            errors=[
                FieldError(FIELD, f"this key may send from: {', '.join(usable)}", "unknown_account")
            ],
        )
    if conversation_account is not None:
        if requested is not None and requested != conversation_account:
            raise Problem(
                VALIDATION,
                f"the conversation belongs to the account {conversation_account!r}",
                errors=[
                    FieldError(
                        FIELD,
                        f"a reply goes from the conversation's account, {conversation_account}",
                        "account_mismatch",
                    )
                ],
            )
        chosen = conversation_account
    elif requested is not None:
        chosen = requested
    elif caller.accounts:
        chosen = caller.accounts[0]
    else:
        default = accounts.default
        chosen = default.id if default else DEFAULT_ID
    if caller.accounts is not None and chosen not in caller.accounts:
        raise Problem(
            ACCOUNT_FORBIDDEN,
            f"this API key may not send from the account {chosen!r}",
            errors=[
                FieldError(
                    FIELD,
                    f"this key may send from: {', '.join(caller.accounts)}",
                    "account_not_allowed",
                )
            ],
        )
    return chosen
