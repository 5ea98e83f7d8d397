"""Pages of message records through the indexes of ``bridge.outbound.message_index``:
newest first, filtered, with a cursor that concurrent writes never move.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import redis

from bridge.config.redis_text import text
from bridge.outbound.message_index import (
    ALL_KEY,
    broadcast_scope,
    conversation_scope,
    idempotency_key_index,
    member,
    person_of,
    person_scope,
    scope_key,
    status_key,
    time_bound,
)
from bridge.outbound.messages import MessageRecord, MessageStatus, record_key

# A page reads at most this many members before it answers with what it found and a cursor to
# go on from: the cost of one request is bounded, however many records exist and however few
# of them match the filters the chosen index does not cover.
SCAN_BUDGET = 1_000


@dataclass(frozen=True)
class MessageQuery:
    """What ``GET /messages`` asks for; None is no filter. ``until`` is exclusive."""

    statuses: frozenset[MessageStatus] = frozenset()
    to: str | None = None
    conversation: str | None = None
    idempotency_key: str | None = None
    broadcast: str | None = None
    since: float | None = None
    until: float | None = None

    def sources(self) -> list[str]:
        """The index (or indexes, merged) that holds every match and as few others as can be
        told beforehand: an Idempotency-Key's; else a conversation's or person's, by status
        when one is asked for."""
        if self.idempotency_key is not None:
            return [idempotency_key_index(self.idempotency_key)]
        scope = None
        if self.conversation is not None:
            scope = conversation_scope(self.conversation)
        elif self.broadcast is not None:
            scope = broadcast_scope(self.broadcast)
        elif self.to is not None:
            scope = person_scope(self.to)
        if self.statuses:
            return [status_key(s.value, scope) for s in sorted(self.statuses)]
        return [ALL_KEY if scope is None else scope_key(scope)]

    def matches(self, record: MessageRecord) -> bool:
        """The record's own fields decide: an index may lag a status change by a moment."""
        if self.statuses and record.status not in self.statuses:
            return False
        if self.to is not None and person_of(record) != self.to.strip().lower():
            return False
        if self.broadcast is not None and record.broadcast != self.broadcast:
            return False
        return self.conversation is None or record.conversation == self.conversation


@dataclass(frozen=True)
class Page:
    records: list[MessageRecord]
    next_cursor: str | None


class MessageSearch:
    """Reads pages of records through the indexes."""

    def __init__(self, client: redis.Redis, scan_budget: int = SCAN_BUDGET) -> None:
        self._redis = client
        self._scan_budget = scan_budget

    def page(self, query: MessageQuery, limit: int, cursor: str | None = None) -> Page:
        """Up to ``limit`` matching records older than ``cursor`` (a member), newest first,
        and the cursor of the next page (None when nothing older is left). A page may hold
        fewer than ``limit`` and still have a cursor: the scan budget ran out first."""
        sources = query.sources()
        upper = "+" if cursor is None else "(" + cursor
        if query.until is not None:
            until = "(" + time_bound(query.until)
            upper = until if cursor is None or until[1:] <= cursor else upper
        lower = "-" if query.since is None else "[" + time_bound(query.since)
        found: list[MessageRecord] = []
        examined = 0
        while True:
            batch = min(limit - len(found) + 1, self._scan_budget - examined)
            members, exhausted = self._merged(sources, upper, lower, batch)
            records = self._records(members, sources)
            for entry, record in zip(members, records, strict=True):
                examined += 1
                if record is not None and query.matches(record):
                    if len(found) == limit:
                        # One more match exists: the page ends at the one before it.
                        return Page(found, _cursor_of(found[-1]))
                    found.append(record)
                upper = "(" + entry
            if exhausted:
                return Page(found, None)
            if examined >= self._scan_budget:
                return Page(found, upper[1:])

    def _merged(
        self, sources: Sequence[str], upper: str, lower: str, count: int
    ) -> tuple[list[str], bool]:
        """The ``count`` newest members below ``upper`` over all ``sources``, and whether that
        was all of them."""
        with self._redis.pipeline(transaction=False) as pipe:
            for key in sources:
                pipe.zrange(key, upper, lower, desc=True, bylex=True, offset=0, num=count)
            answers: list[list[Any]] = pipe.execute()
        merged = sorted({text(m) for answer in answers for m in answer}, reverse=True)
        full = any(len(answer) == count for answer in answers)
        return merged[:count], not full and len(merged) <= count

    def _records(
        self, members: Sequence[str], sources: Iterable[str]
    ) -> list[MessageRecord | None]:
        if not members:
            return []
        ids = [entry.partition(":")[2] for entry in members]
        raws = self._redis.mget([record_key(mid) for mid in ids])
        gone = [entry for entry, raw in zip(members, raws, strict=True) if raw is None]
        if gone:
            # The record expired (or the TTL was lowered since): the member goes too.
            with self._redis.pipeline(transaction=False) as pipe:
                for key in sources:
                    pipe.zrem(key, *gone)
                pipe.execute()
        return [None if raw is None else MessageRecord.from_json(raw) for raw in raws]


def _cursor_of(record: MessageRecord) -> str:
    return member(record)
