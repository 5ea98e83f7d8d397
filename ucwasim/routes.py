"""Maps a UCWA request (method, path) to its request kind and handler.

Matching is case-insensitive, as on IIS; ``*`` segments are passed to the handler.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from werkzeug.wrappers import Response

from ucwasim import app_api, batch, discovery, events_api, im_api, photos
from ucwasim.context import Ctx

Handler = Callable[..., Response]

_CONV = ("communication", "conversations", "*")
_MSG = (*_CONV, "messaging")
_INV = ("communication", "messaginginvitations", "*")

# (segments after /ucwa/oauth/v1/applications/<id>, {method: (kind, handler)})
APP_ROUTES: list[tuple[tuple[str, ...], dict[str, tuple[str, Handler]]]] = [
    (
        (),
        {
            "GET": ("application", app_api.get_application),
            "DELETE": ("application", app_api.delete_application),
        },
    ),
    (("policies",), {"GET": ("policies", app_api.policies)}),
    (("events",), {"GET": ("events", events_api.get_events)}),
    (("me",), {"GET": ("me", app_api.get_me)}),
    (("me", "makemeavailable"), {"POST": ("makeMeAvailable", app_api.make_me_available)}),
    (("me", "reportmyactivity"), {"POST": ("reportMyActivity", app_api.report_my_activity)}),
    (("me", "presence"), {"GET": ("presence", lambda c: app_api.me_detail(c, "presence"))}),
    (("me", "note"), {"GET": ("note", lambda c: app_api.me_detail(c, "note"))}),
    (("me", "location"), {"GET": ("location", lambda c: app_api.me_detail(c, "location"))}),
    (("people", "search"), {"GET": ("search", app_api.search)}),
    (("people", "*"), {"GET": ("contact", app_api.contact)}),
    (("people", "*", "presence"), {"GET": ("contactPresence", app_api.contact_presence)}),
    (("people", "*", "note"), {"GET": ("contactNote", app_api.contact_note)}),
    (("people", "*", "location"), {"GET": ("contactLocation", app_api.contact_location)}),
    (("photos", "*"), {"GET": ("photo", photos.get_photo)}),
    (
        ("communication",),
        {
            "GET": ("communication", app_api.get_communication),
            "PUT": ("communication", app_api.put_communication),
        },
    ),
    (
        ("communication", "messaginginvitations"),
        {"POST": ("startMessaging", im_api.start_messaging)},
    ),
    (_INV, {"GET": ("messagingInvitation", im_api.get_invitation)}),
    ((*_INV, "accept"), {"POST": ("accept", im_api.accept)}),
    ((*_INV, "decline"), {"POST": ("decline", im_api.decline)}),
    ((*_INV, "cancel"), {"POST": ("cancel", im_api.cancel)}),
    (("communication", "conversations"), {"GET": ("conversations", im_api.list_conversations)}),
    (
        _CONV,
        {
            "GET": ("conversation", im_api.get_conversation),
            "DELETE": ("conversation", im_api.delete_conversation),
        },
    ),
    (_MSG, {"GET": ("messaging", im_api.get_messaging)}),
    (
        (*_MSG, "messages"),
        {"POST": ("sendMessage", im_api.send_message), "GET": ("messages", im_api.list_messages)},
    ),
    ((*_MSG, "messages", "*"), {"GET": ("message", im_api.get_message)}),
    ((*_MSG, "typing"), {"POST": ("setIsTyping", im_api.set_is_typing)}),
    ((*_MSG, "typingparticipants"), {"GET": ("typingParticipants", im_api.typing_participants)}),
    ((*_MSG, "terminate"), {"POST": ("stopMessaging", im_api.stop_messaging)}),
    ((*_MSG, "addmessaging"), {"POST": ("addMessaging", im_api.add_messaging)}),
    ((*_CONV, "participants"), {"GET": ("participants", im_api.list_participants)}),
    ((*_CONV, "participants", "*"), {"GET": ("participant", im_api.get_participant)}),
    (
        (*_CONV, "participants", "*", "messaging"),
        {"GET": ("participantMessaging", im_api.get_participant_messaging)},
    ),
]

ROOT = discovery.ROOT_PATH.lower()
POOL2_ROOT = (discovery.POOL2_PREFIX + discovery.ROOT_PATH).lower()
APPS = discovery.APPLICATIONS_URL_PATH.lower()


@dataclass
class Route:
    """What a request hit. ``handler`` is None when the method is not allowed."""

    kind: str
    scope: str  # "public", "user" (token needed) or "app" (token and application needed)
    handler: Handler | None
    args: tuple[Any, ...] = ()
    app_id: str | None = None
    allowed: tuple[str, ...] = ()


def _pick(
    kind_by_method: dict[str, tuple[str, Handler]], method: str
) -> tuple[str, Handler | None]:
    if method in kind_by_method:
        return kind_by_method[method]
    kind = next(iter(kind_by_method.values()))[0]
    return kind, None


def resolve(method: str, path: str) -> Route | None:
    low = path.lower().rstrip("/") or "/"
    public: dict[str, tuple[str, dict[str, tuple[str, Handler]]]] = {
        "/": ("root", {"GET": ("root", lambda c: discovery.root(c, pooled=False))}),
        ROOT: ("root", {"GET": ("root", lambda c: discovery.root(c, pooled=False))}),
        POOL2_ROOT: ("root", {"GET": ("root", lambda c: discovery.root(c, pooled=True))}),
        ROOT + "/oauth/user": ("user", {"GET": ("user", lambda c: discovery.user(c, False))}),
        POOL2_ROOT + "/oauth/user": ("user", {"GET": ("user", lambda c: discovery.user(c, True))}),
        discovery.TOKEN_PATH.lower(): ("token", {"POST": ("token", discovery.token)}),
        discovery.XFRAME_PATH.lower(): ("xframe", {"GET": ("xframe", discovery.xframe)}),
    }
    if low in public:
        kind, table = public[low]
        _, handler = _pick(table, method)
        scope = "user" if kind == "user" else "public"  # the user resource needs a token
        return Route(kind, scope, handler, allowed=tuple(table))
    if low == APPS:
        table = {"POST": ("applications", app_api.create_application)}
        kind, handler = _pick(table, method)
        return Route(kind, "user", handler, allowed=tuple(table))
    if not low.startswith(APPS + "/"):
        return None
    segments = low[len(APPS) + 1 :].split("/")
    app_id, rest = segments[0], tuple(segments[1:])
    if rest == ("batch",):
        table = {"POST": ("batch", batch.run_batch)}
        kind, handler = _pick(table, method)
        return Route(kind, "app", handler, app_id=app_id, allowed=tuple(table))
    for pattern, table in APP_ROUTES:
        if len(pattern) != len(rest):
            continue
        captured = []
        for want, got in zip(pattern, rest, strict=True):
            if want == "*":
                captured.append(got)
            elif want != got:
                break
        else:
            kind, handler = _pick(table, method)
            return Route(kind, "app", handler, tuple(captured), app_id, tuple(table))
    return Route("unknown", "app", None, app_id=app_id)


def call(route: Route, ctx: Ctx) -> Response:
    assert route.handler is not None
    return route.handler(ctx, *route.args)
