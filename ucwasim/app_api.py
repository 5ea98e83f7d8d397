"""Handlers for the application, me and communication resources.

The request context arrives with the account and application already resolved.
"""

from __future__ import annotations

import time
from typing import Any

from werkzeug.wrappers import Response

from ucwasim import render, sequences
from ucwasim.context import Ctx, empty, json_response, optional_text, required_text
from ucwasim.errors import UcwaError, bad_parameter, conflict, not_found

MODALITIES = ("Messaging", "PhoneAudio")
ALL_MODALITIES = (
    "Audio",
    "Video",
    "PhoneAudio",
    "ApplicationSharing",
    "Messaging",
    "DataCollaboration",
    "PanoramicVideo",
)
FORMATS = ("Plain", "Html")
SIGN_IN_AS = ("Online", "Busy", "DoNotDisturb", "BeRightBack", "Away", "Offwork")


def create_application(ctx: Ctx) -> Response:
    values = ctx.input()
    culture = required_text(values, "culture", 100)
    endpoint = required_text(values, "endpointId", 100)
    agent = required_text(values, "userAgent", 100)
    instance = optional_text(values, "instanceId", 100) or ""
    world = ctx.world
    identity = (culture.lower(), endpoint, agent, instance)
    for app in world.applications_of(ctx.user):
        if app.identity == identity:
            ctx.app = app
            return json_response(render.application(app), 200)
    if len(world.applications_of(ctx.user)) >= world.cfg.max_applications_per_user:
        raise UcwaError(
            410, "Gone", "The user has too many applications.", subcode="TooManyApplications"
        )
    app = world.new_application(ctx.user, culture, endpoint, agent, instance)
    ctx.app = app
    return json_response(render.application(app), 201, {"Location": app.href})


def get_application(ctx: Ctx) -> Response:
    return json_response(render.application(ctx.application))


def delete_application(ctx: Ctx) -> Response:
    ctx.board.remove_application(ctx.application)
    return empty()


def policies(ctx: Ctx) -> Response:
    app = ctx.application
    return json_response(
        {
            "_links": {"self": render.link(app.href + "/policies")},
            "rel": "policies",
            "messagingInvitationsAllowed": True,
            "htmlMessagingAllowed": True,
        }
    )


def get_me(ctx: Ctx) -> Response:
    return json_response(render.me(ctx.application))


def _string_list(values: dict[str, Any], name: str, allowed: tuple[str, ...]) -> list[str] | None:
    raw = values.get(name.lower())
    if raw is None:
        return None
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list) or not all(isinstance(x, str) for x in raw):
        raise bad_parameter(name, f"{name} must be a list of strings.")
    canonical = {a.lower(): a for a in allowed}
    out = []
    for item in raw:
        if item.lower() not in canonical:
            raise bad_parameter(name, f"{item!r} is not a valid {name} value.")
        out.append(canonical[item.lower()])
    return out


def make_me_available(ctx: Ctx) -> Response:
    app = ctx.application
    values = ctx.input()
    modalities = _string_list(values, "supportedModalities", ALL_MODALITIES)
    formats = _string_list(values, "supportedMessageFormats", FORMATS)
    sign_in_as = optional_text(values, "signInAs", 50)
    if sign_in_as is not None and sign_in_as.lower() not in {s.lower() for s in SIGN_IN_AS}:
        raise bad_parameter("signInAs", f"{sign_in_as!r} is not a valid signInAs value.")
    if app.available:
        raise conflict("makeMeAvailable was already called.", "AlreadyExists")
    refused = [m for m in modalities or [] if m not in MODALITIES]
    if refused:
        raise UcwaError(
            403, "Forbidden", f"Modalities not allowed for this application: {', '.join(refused)}."
        )
    app.available = True
    app.modalities = modalities if modalities is not None else ["Messaging"]
    if formats is not None:
        app.formats = ["Plain"] + [f for f in formats if f != "Plain"]
    app.sign_in_as = sign_in_as or "Online"
    app.last_activity = time.monotonic()
    app.new_etag()
    sequences.made_available(app)
    return empty()


def report_my_activity(ctx: Ctx) -> Response:
    app = ctx.application
    if not app.available:
        raise conflict("Call makeMeAvailable first.", "MakeMeAvailableRequired")
    app.last_activity = time.monotonic()
    return empty()


def me_detail(ctx: Ctx, rel: str) -> Response:
    app = ctx.application
    if not app.available:
        raise not_found()
    href = f"{app.href}/me/{rel.lower()}"
    bodies: dict[str, dict[str, Any]] = {
        "presence": {"availability": app.sign_in_as, "activity": "Available"},
        "note": {"message": "", "type": "Personal"},
        "location": {"location": ""},
    }
    body = bodies[rel.lower()]
    return json_response({**body, "_links": {"self": render.link(href)}, "rel": rel.lower()})


def get_communication(ctx: Ctx) -> Response:
    return json_response(render.communication(ctx.application))


def put_communication(ctx: Ctx) -> Response:
    app = ctx.application
    if_match = ctx.request.headers.get("If-Match")
    quoted = if_match is not None and len(if_match) >= 2 and if_match[0] == if_match[-1] == '"'
    if not quoted:
        raise UcwaError(428, "PreconditionRequired", "A quoted If-Match header is required.")
    assert if_match is not None
    if if_match.strip('"') != app.etag:
        raise UcwaError(412, "PreconditionFailed", "The resource was changed; GET it again.")
    values = ctx.input()
    if values.get(app.put_marker.lower()) != "please pass this in a PUT request":
        raise bad_parameter(app.put_marker, "The PUT body must contain the whole resource.")
    formats = _string_list(values, "supportedMessageFormats", FORMATS)
    if formats is not None:
        app.formats = ["Plain"] + [f for f in formats if f != "Plain"]
    app.new_etag()
    sequences.communication_updated(app)
    return empty()


def contact(ctx: Ctx, who: str) -> Response:
    account = ctx.world.account(who)
    if account is None:
        raise not_found("The contact does not exist.")
    return json_response(render.contact(ctx.application, account.sip, account.name))


def contact_presence(ctx: Ctx, who: str) -> Response:
    account = ctx.world.account(who)
    if account is None:
        raise not_found("The contact does not exist.")
    online = ctx.world.available_app(account.sip) is not None or account.user.behaviour != "offline"
    href = f"{ctx.application.href}/people/{who}/presence"
    return json_response(
        {
            "availability": "Online" if online else "Offline",
            "_links": {"self": render.link(href)},
            "rel": "contactPresence",
        }
    )
