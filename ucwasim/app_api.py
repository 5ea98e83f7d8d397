"""Handlers for the application, me and communication resources.

The request context arrives with the account and application already resolved.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from werkzeug.wrappers import Response

from ucwasim import render, sequences
from ucwasim.context import Ctx, empty, json_response, optional_text, required_text
from ucwasim.errors import UcwaError, bad_parameter, conflict, not_found
from ucwasim.model import Account, wall_ms

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
MAX_SEARCH_RESULTS = 100  # search_ref.md: "The maximum value is 100"
SIGN_IN_AS = ("Online", "Busy", "DoNotDisturb", "BeRightBack", "Away", "Offwork")
# signInAs (PreferredAvailability_ref.md) as the contact's availability (Availability_ref.md);
# Offwork has none of its own: Away, with the activity "off-work" (contactPresence_ref.md).
AVAILABILITY = {s.lower(): s for s in SIGN_IN_AS if s != "Offwork"}


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


def _tagged(ctx: Ctx, body: dict[str, Any], etag: str) -> Response:
    """A GET answer with an ``Etag`` header; ``304`` when ``If-None-Match`` names it (HTTP.md:
    "If-None-Match - Used by clients in a GET request to reduce data transfer")."""
    wanted = ctx.request.headers.get("If-None-Match", "").split(",")
    if etag in (t.strip().strip('"') for t in wanted):
        return empty(304, {"Etag": etag})
    return json_response(body, headers={"Etag": etag})


def get_application(ctx: Ctx) -> Response:
    # application_ref.md: GET answers carry an Etag header (a GUID in its sample).
    body = render.application(ctx.application)
    etag = str(uuid.uuid5(uuid.NAMESPACE_URL, json.dumps(body, sort_keys=True)))
    return _tagged(ctx, body, etag)


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
    ctx.user.last_active_ms = wall_ms()
    app.new_etag()
    sequences.made_available(app)
    return empty()


def report_my_activity(ctx: Ctx) -> Response:
    app = ctx.application
    if not app.available:
        raise conflict("Call makeMeAvailable first.", "MakeMeAvailableRequired")
    app.last_activity = time.monotonic()
    ctx.user.last_active_ms = wall_ms()
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
    # communication_ref.md: an Etag header; its value is the etag a PUT must quote in If-Match.
    return _tagged(ctx, render.communication(ctx.application), ctx.application.etag)


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


def _contact_account(ctx: Ctx, who: str) -> Account:
    account = ctx.world.account(who)
    if account is None:
        raise not_found("The contact does not exist.")
    return account


def contact(ctx: Ctx, who: str) -> Response:
    # contact_ref.md: GET answers carry an Etag header; the body etag is GetAContactData.md's.
    account = _contact_account(ctx, who)
    body = render.contact(ctx.application, account.sip, account.name)
    return _tagged(ctx, body, body["etag"])


def search(ctx: Ctx) -> Response:
    """people/search (search_ref.md, SearchForUsersContact.md): ``query`` is required, at most
    256 characters, and matched against name, e-mail and URI; ``limit`` is 1 to 100."""
    query = required_text({k.lower(): v for k, v in ctx.request.args.items()}, "query", 256)
    raw_limit = ctx.query("limit")
    limit = MAX_SEARCH_RESULTS
    if raw_limit is not None:
        if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= MAX_SEARCH_RESULTS:
            raise bad_parameter("limit", f"limit must be between 1 and {MAX_SEARCH_RESULTS}.")
        limit = int(raw_limit)
    needle = query.strip().lower()
    if needle.startswith("sip:"):
        needle = needle[4:]
    found = [
        a
        for a in sorted(ctx.world.accounts.values(), key=lambda a: a.sip)
        if needle in a.name.lower() or needle in a.sip[4:]
    ]
    app = ctx.application
    self_href = f"{app.href}/people/search?{ctx.request.query_string.decode()}"
    body: dict[str, Any] = {
        "moreResultsAvailable": len(found) > limit,
        "_links": {"self": render.link(self_href)},
        "_embedded": {"contact": [render.contact(app, a.sip, a.name) for a in found[:limit]]},
        "rel": "search",
    }
    return json_response(body)


def contact_note(ctx: Ctx, who: str) -> Response:
    # contactNote_ref.md: message and type; the simulated users publish an empty note.
    _contact_account(ctx, who)
    href = f"{ctx.application.href}/people/{who}/note"
    body = {"message": "", "type": "Personal", "_links": {"self": render.link(href)}}
    return json_response({**body, "rel": "contactNote"})


def contact_location(ctx: Ctx, who: str) -> Response:
    # contactLocation_ref.md: one location string; the simulated users publish none.
    _contact_account(ctx, who)
    href = f"{ctx.application.href}/people/{who}/location"
    body = {"location": "", "_links": {"self": render.link(href)}}
    return json_response({**body, "rel": "contactLocation"})


def contact_presence(ctx: Ctx, who: str) -> Response:
    """The fields GetPresenceDataOfAContact.md shows (availability, deviceType, lastActive as
    ``/Date(ms)/``), with values from contactPresence_ref.md and its enumerations."""
    account = _contact_account(ctx, who)
    apps = [a for a in ctx.world.applications_of(account) if a.available and a.alive]
    body: dict[str, Any]
    last_active = account.last_active_ms
    if apps:
        # Signed in through UCWA: a browser (ContactDeviceType_ref.md "Web"; application_ref.md
        # "only the browser type is supported"), as available as its signInAs.
        signed_in_as = max(apps, key=lambda a: a.created_at).sign_in_as.lower()
        body = {"availability": AVAILABILITY.get(signed_in_as, "Away")}
        if signed_in_as == "offwork":
            body["activity"] = "off-work"
        body["deviceType"] = "Web"
    elif account.user.behaviour != "offline":
        # A scripted user is at its desktop client (the "PC" of contactPresence_ref.md's sample).
        body = {"availability": "Online", "deviceType": "PC"}
        last_active = wall_ms()
    else:
        # As the offline contact of GetPresenceDataOfAContact.md: Offline, Unknown device.
        body = {"availability": "Offline", "deviceType": "Unknown"}
    body["lastActive"] = f"/Date({last_active})/"
    href = f"{ctx.application.href}/people/{who}/presence"
    return json_response({**body, "_links": {"self": render.link(href)}, "rel": "contactPresence"})
