"""``bench/_profile.py``'s summary: where each role's CPU went, or why it cannot say."""

from __future__ import annotations

from typing import Any, cast

from bench._profile import Profiles, RoleProfile


def profiles(**by_role: RoleProfile) -> Profiles:
    made = Profiles(cast(Any, None), ("api", "worker"))
    made.by_role.update(by_role)
    return made


def test_a_role_with_samples_says_where_its_cpu_went() -> None:
    worker = RoleProfile()
    worker.add(["run", "post", "send"], 3)
    worker.add(["run", "encode"], 1)
    lines = dict(profiles(worker=worker, api=RoleProfile()).summary())
    assert lines["where worker CPU goes, self (4 samples)"] == "send 75%, encode 25%"
    assert not any("api" in label for label in lines)


def test_no_samples_at_all_is_said_not_left_out() -> None:
    """A phase over before py-spy sampled it printed nothing, which read as a broken profile."""
    (line,) = profiles(api=RoleProfile(), worker=RoleProfile()).summary()
    assert line[0] == "profile" and "no samples" in line[1]
