"""How poller processes share accounts: targets, preferences and plans by hand, then a simulated
pool of members following their plans over a lease table, and the membership on real Redis."""

from __future__ import annotations

import random
import time
from collections import Counter
from functools import partial

import pytest
import redis

from bridge.session.lease import PollerLease
from bridge.session.pool import MEMBERS_KEY, Membership, member_id, plan, preference, target

ACCOUNTS = [f"sip:bot{n}@contoso.com" for n in range(1, 10)]


# -- targets and preferences --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("accounts", "members", "expected"),
    [
        (9, 3, [3, 3, 3]),
        (9, 4, [3, 2, 2, 2]),
        (9, 2, [5, 4]),
        (1, 2, [1, 0]),
        (2, 5, [1, 1, 0, 0, 0]),
        (0, 2, [0, 0]),
    ],
)
def test_targets_split_the_accounts_and_give_the_remainder_to_the_first_members(
    accounts: int, members: int, expected: list[int]
) -> None:
    ids = [f"m{n}" for n in range(members)]
    assert [target(accounts, ids, m) for m in ids] == expected
    assert sum(expected) == accounts


def test_a_member_missing_from_the_list_counts_itself() -> None:
    assert target(9, ["m1", "m2"], "m0") == 3


def test_member_ids_sort_by_the_time_they_joined() -> None:
    first, second = member_id(1_700_000_000.0), member_id(1_700_000_000.5)
    assert sorted([second, first]) == [first, second]
    assert "|" not in first  # a lease value is ``<holder>|<fence>``


def test_preferences_are_stable_and_differ_between_members() -> None:
    assert preference(ACCOUNTS[0], "m1") == preference(ACCOUNTS[0], "m1")
    members = ("m1", "m2", "m3")
    orders = {tuple(sorted(ACCOUNTS, key=partial(preference, member=m))) for m in members}
    assert len(orders) == 3


# -- one plan -----------------------------------------------------------------------------------


def test_a_member_below_its_target_tries_the_free_accounts_it_prefers_first() -> None:
    holders: dict[str, str | None] = {a: None for a in ACCOUNTS}
    holders[ACCOUNTS[0]] = "m2"
    step = plan(ACCOUNTS, "m1", ["m1", "m2"], holders, serving=set())
    assert step.target == 5 and step.needed == 5 and step.release == ()
    assert ACCOUNTS[0] not in step.acquire and len(step.acquire) == 8
    assert list(step.acquire) == sorted(
        step.acquire, key=lambda a: preference(a, "m1"), reverse=True
    )


def test_a_member_above_its_target_gives_up_its_least_preferred_accounts() -> None:
    mine = set(ACCOUNTS[:5])
    holders = {a: ("m1" if a in mine else "m2") for a in ACCOUNTS}
    step = plan(ACCOUNTS, "m1", ["m1", "m2", "m3"], holders, serving=mine)
    assert step.target == 3 and step.acquire == ()
    least = sorted(mine, key=lambda a: preference(a, "m1"))[:2]
    assert sorted(step.release) == sorted(least)


def test_a_member_alone_keeps_everything() -> None:
    holders: dict[str, str | None] = {a: "m1" for a in ACCOUNTS}
    assert plan(ACCOUNTS, "m1", ["m1"], holders, serving=set(ACCOUNTS)).release == ()


def test_accounts_still_stopping_are_neither_free_nor_served() -> None:
    holders: dict[str, str | None] = {a: None for a in ACCOUNTS}
    step = plan(ACCOUNTS, "m1", ["m1"], holders, serving=set(), busy={ACCOUNTS[0]})
    assert ACCOUNTS[0] not in step.acquire and step.needed == 9


def test_an_overdue_free_account_is_rescued_by_a_member_at_its_target() -> None:
    holders: dict[str, str | None] = {a: "m1" for a in ACCOUNTS[:3]}
    holders.update({a: "m2" for a in ACCOUNTS[3:8]})
    holders[ACCOUNTS[8]] = None
    mine = set(ACCOUNTS[:3])
    step = plan(ACCOUNTS, "m1", ["m0", "m1", "m2"], holders, serving=mine)
    assert step.needed == 0 and step.rescue == ()
    step = plan(ACCOUNTS, "m1", ["m0", "m1", "m2"], holders, mine, overdue={ACCOUNTS[8]})
    assert step.rescue == (ACCOUNTS[8],)


# -- a simulated pool ---------------------------------------------------------------------------


class Table:
    """Leases as a dict; members run their plans in turn, as pool rounds would."""

    def __init__(self, accounts: list[str]) -> None:
        self.accounts = accounts
        self.holders: dict[str, str | None] = {a: None for a in accounts}
        self.moves = 0

    def round(self, members: list[str], rng: random.Random) -> None:
        for member in rng.sample(members, len(members)):
            serving = {a for a, h in self.holders.items() if h == member}
            step = plan(self.accounts, member, members, self.holders, serving)
            for account in step.release:
                self.holders[account] = None
            taken = 0
            for account in step.acquire:
                if taken < step.needed and self.holders[account] is None:
                    self.holders[account] = member
                    self.moves += 1
                    taken += 1

    def spread(self, members: list[str]) -> list[int]:
        counts = Counter(self.holders.values())
        return [counts[m] for m in sorted(members)]

    def settle(self, members: list[str], rng: random.Random, rounds: int = 6) -> None:
        for _ in range(rounds):
            self.round(members, rng)


@pytest.mark.parametrize("seed", range(20))
def test_members_converge_to_an_even_spread_moving_only_what_they_must(seed: int) -> None:
    rng = random.Random(seed)
    table = Table(ACCOUNTS)
    members = ["m1", "m2", "m3"]
    table.settle(members, rng)
    assert table.spread(members) == [3, 3, 3]
    assert None not in table.holders.values()

    table.moves = 0
    members.append("m4")  # joins last: ranks last, takes one account from two incumbents
    table.settle(members, rng)
    assert table.spread(members) == [3, 2, 2, 2]
    assert table.moves == 2

    table.moves = 0
    gone = rng.choice(members)
    members.remove(gone)
    table.holders = {a: (None if h == gone else h) for a, h in table.holders.items()}
    lost = 3 if gone == "m1" else 2
    table.settle(members, rng)
    assert sorted(table.spread(members), reverse=True) == [3, 3, 3]
    assert table.moves == lost  # only the dead member's accounts move


def test_one_account_stays_with_the_member_that_has_it_when_a_later_one_joins() -> None:
    table = Table(ACCOUNTS[:1])
    first, later = member_id(1000.0), member_id(2000.0)
    table.settle([first], random.Random(1))
    table.moves = 0
    table.settle([first, later], random.Random(2))
    assert table.holders == {ACCOUNTS[0]: first} and table.moves == 0


# -- membership on Redis ------------------------------------------------------------------------


def test_members_are_live_while_they_beat_and_gone_after_one_ttl(
    redis_client: redis.Redis,
) -> None:
    one = Membership(redis_client, ttl_s=0.5, member="m1")
    two = Membership(redis_client, ttl_s=0.5, member="m2")
    assert one.beat() == ["m1"]
    assert two.beat() == ["m1", "m2"]
    time.sleep(0.6)
    assert two.beat() == ["m2"]  # m1 went quiet
    assert redis_client.zscore(MEMBERS_KEY, "m1") is not None  # kept a while, not counted
    two.leave()
    assert one.beat() == ["m1"]


def test_holders_read_every_lease_in_one_round_trip(redis_client: redis.Redis) -> None:
    lease = PollerLease(redis_client, "sip:bot1@contoso.com")
    lease.holder = "m7"
    assert lease.try_acquire()
    keys = [lease.key, PollerLease(redis_client, "sip:bot2@contoso.com").key]
    assert Membership(redis_client, 5.0, "m1").holders(keys) == ["m7", None]
