"""The event channel handler: validates P-GET parameters, applies resume, runs the long poll.

Out-of-range parameters are rejected (400) rather than clamped.
"""

from __future__ import annotations

from werkzeug.wrappers import Response

from ucwasim.channel import Params
from ucwasim.context import Ctx, json_response
from ucwasim.errors import bad_parameter

LIMITS = {"timeout": (180, 1800), "low": (5, 1800), "medium": (5, 1800)}


def _int_param(ctx: Ctx, name: str) -> int | None:
    raw = ctx.query(name)
    if raw is None:
        return None
    try:
        return int(raw)
    except ValueError as exc:
        raise bad_parameter(name, f"{name} must be an integer.") from exc


def _bounded(ctx: Ctx, name: str, current: float) -> float:
    value = _int_param(ctx, name)
    if value is None:
        return current
    low, high = LIMITS[name]
    if not low <= value <= high:
        raise bad_parameter(name, f"{name} must be between {low} and {high} seconds.")
    return float(value)


def get_events(ctx: Ctx) -> Response:
    app = ctx.application
    channel = app.channel
    ack = _int_param(ctx, "ack")
    if ack is None or ack < 1:
        raise bad_parameter("ack", "ack is required and must be a positive integer.")
    world = ctx.world
    if not channel.resume_pending and channel.idle_for() > world.scaled(world.cfg.resume_after):
        ctx.board.resume(app)
    current = channel.params
    params = Params(
        _bounded(ctx, "timeout", current.timeout),
        _bounded(ctx, "low", current.low),
        _bounded(ctx, "medium", current.medium),
    )
    priority = _int_param(ctx, "priority") or 0
    if ctx.request.environ.get("ucwasim.force_resync"):
        return json_response(channel.resync(ack))
    result = channel.poll(ack, params, priority)
    for callback in result.delivered:
        callback()
    return json_response(result.body, result.status)
