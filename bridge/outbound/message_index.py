"""Indexes of the message records, for listing them newest first: all, by status, person,
conversation and Idempotency-Key; written in the same script or transaction as the record.

Every index is a sorted set whose members all score 0 and sort by their text,
``<created_at in ms, 15 digits>:<message id>``, so ``ZRANGE … BYLEX REV`` reads newest first
from any position: a member is a page cursor that concurrent writes never move. Writers trim
members older than the record TTL (those records are gone) and renew the index's own TTL, so
the indexes expire with the records. ``bridge.outbound.message_search`` reads them.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from enum import Enum
from typing import Protocol

from redis.client import Pipeline

from bridge.config.accounts import DEFAULT_ID


class MessageRecord(Protocol):
    """What the indexes read of a record (``bridge.outbound.messages.MessageRecord``, which
    imports this module)."""

    @property
    def id(self) -> str: ...
    @property
    def created_at(self) -> str: ...
    @property
    def status(self) -> Enum: ...
    @property
    def to(self) -> str | None: ...
    @property
    def line(self) -> str | None: ...
    @property
    def conversation(self) -> str | None: ...
    @property
    def idempotency_key(self) -> str | None: ...
    @property
    def broadcast(self) -> str | None: ...


PREFIX = "msgs:"
ALL_KEY = PREFIX + "all"
CURSOR_DIGITS = 15  # ms since 1970 stay within 15 digits for the next 29,000 years
# How far ahead ``send_at`` may be. A scheduled record lives that much longer than the record
# TTL, so writers trim only members older than both together: a member may outlast its record
# by up to this long (readers skip and drop it), but never the other way round.
SCHEDULE_HORIZON_S = 7 * 86_400


def person_scope(uri: str) -> str:
    return f"to:{uri.strip().lower()}"


def conversation_scope(conversation: str) -> str:
    return f"conv:{conversation}"


def broadcast_scope(broadcast: str) -> str:
    return f"bcast:{broadcast}"


def scope_key(scope: str) -> str:
    """The index of one person's or one conversation's messages."""
    return PREFIX + scope


def status_key(status: str, scope: str | None = None) -> str:
    """The index of the messages in ``status``: all of them, or those of one ``scope`` (so a
    person's failed messages are read without passing their delivered ones)."""
    return f"{PREFIX}status:{status}" + ("" if scope is None else f":{scope}")


def idempotency_key_index(idempotency_key: str) -> str:
    # Hashed: any visible ASCII up to 255 characters is a valid key, as in the idempotency store
    return f"{PREFIX}idem:{hashlib.sha256(idempotency_key.encode()).hexdigest()}"


def member(record: MessageRecord) -> str:
    return f"{round(_epoch(record.created_at) * 1000):0{CURSOR_DIGITS}d}:{record.id}"


def time_bound(epoch_s: float) -> str:
    """The text every member created at or after ``epoch_s`` sorts at or above."""
    return f"{max(0, round(epoch_s * 1000)):0{CURSOR_DIGITS}d}"


# Between an account's id and the person in the line of any account but ``default``
# (``recipient_key``); an account id has no ':', a line without an account starts "sip:"/"conv:".
ACCOUNT_MARK = "|"


def line_account(line: str) -> str:
    """The id of the account a line (``recipient_key``) belongs to."""
    account, mark, _ = line.partition(ACCOUNT_MARK)
    return account if mark and ":" not in account else DEFAULT_ID


def line_person(line: str) -> str:
    """A line's name without its account: the SIP URI or ``conv:<id>``."""
    account, mark, person = line.partition(ACCOUNT_MARK)
    return person if mark and ":" not in account else line


def person_of(record: MessageRecord) -> str | None:
    """The SIP URI (lowercased) the message goes to: ``to``, or the person of the conversation a
    reply was sent into (its line); None for a reply into a conversation nobody knew."""
    if record.to is not None:
        return record.to.strip().lower()
    if record.line is not None:
        person = line_person(record.line)
        return None if person.startswith("conv:") else person
    return None


def scopes(record: MessageRecord) -> list[str]:
    """The person, conversation and broadcast a record is listed under, as far as known."""
    found = []
    person = person_of(record)
    if person is not None:
        found.append(person_scope(person))
    if record.conversation is not None:
        found.append(conversation_scope(record.conversation))
    if record.broadcast is not None:
        found.append(broadcast_scope(record.broadcast))
    return found


def line_scope(record: MessageRecord) -> str:
    """The scope that holds every message of ``record``'s line: its person's, or for a line of
    its own (a reply into a conversation the bridge did not know) its conversation's."""
    person = person_of(record)
    if person is not None:
        return person_scope(person)
    return conversation_scope(record.conversation or "")


def index_keys(record: MessageRecord) -> list[str]:
    """The indexes a newly accepted ``record`` joins."""
    status = record.status.value
    keys = [ALL_KEY, status_key(status)]
    for scope in scopes(record):
        keys += [scope_key(scope), status_key(status, scope)]
    if record.idempotency_key is not None:
        keys.append(idempotency_key_index(record.idempotency_key))
    return keys


# Lua for the intake scripts (``ACCEPT_FUNCTION`` calls it) and status changes: add ``member``
# to each index, drop the members older than ``bound`` and keep the index at least as long as
# the record (``life`` seconds): never shorter, as it may hold a record scheduled further out.
INDEX_FUNCTION = """
local function index_message(keys, member, bound, life)
  for _, key in ipairs(keys) do
    redis.call('ZADD', key, 0, member)
    redis.call('ZREMRANGEBYLEX', key, '-', '(' .. bound)
    if redis.call('TTL', key) < tonumber(life) then
      redis.call('EXPIRE', key, life)
    end
  end
end
"""
_INDEX = INDEX_FUNCTION + "index_message(KEYS, ARGV[1], ARGV[2], ARGV[3])\n"


def reindex(
    pipe: Pipeline, before: MessageRecord, after: MessageRecord, ttl_s: int, life_s: int
) -> None:
    """Queue on ``pipe`` (in MULTI) the index changes of an update: the status indexes it
    moves to, the conversation a cold send went out on. ``ttl_s`` is the record TTL, ``life_s``
    the most the record can still live."""
    old, new = scopes(before), scopes(after)
    status = after.status.value
    joined = [scope_key(scope) for scope in new if scope not in old]
    if after.status != before.status:
        pipe.zrem(status_key(before.status.value), member(before))
        for scope in old:
            pipe.zrem(status_key(before.status.value, scope), member(before))
        joined += [status_key(status), *(status_key(status, scope) for scope in new)]
    else:
        joined += [status_key(status, scope) for scope in new if scope not in old]
    if joined:
        # EVAL, not EVALSHA: inside MULTI a NOSCRIPT would fail this command alone
        bound = trim_bound(after, ttl_s)
        pipe.eval(_INDEX, len(joined), *joined, member(after), bound, life_s)


def trim_bound(record: MessageRecord, ttl_s: int) -> str:
    """Members below it belong to records gone by the time ``record`` was stored, even one
    scheduled as far ahead as allowed: relative to the record's creation, not the clock."""
    return time_bound(_epoch(record.created_at) - ttl_s - SCHEDULE_HORIZON_S)


def _epoch(created_at: str) -> float:
    return datetime.fromisoformat(created_at.replace("Z", "+00:00")).timestamp()
