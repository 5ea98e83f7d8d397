from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from bridge.ucwa import errors as e
from bridge.ucwa.errors import error_from_response
from bridge.ucwa.retry import RetryPolicy, backoff_delay, decide

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
NO_JITTER = RetryPolicy(base=1.0, cap=30.0, jitter_ratio=0.0, retry_after_jitter=0.0)


def fixed(value: float) -> Callable[[], float]:
    return lambda: value


def test_backoff_doubles_to_cap_without_jitter() -> None:
    delays = [backoff_delay(n, 1.0, 10.0, 0.0) for n in range(1, 7)]
    assert delays == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    assert backoff_delay(500, 1.0, 10.0, 0.0) == 10.0


def test_full_jitter_uses_rng() -> None:
    assert backoff_delay(3, 1.0, 60.0, None, fixed(0.5)) == 2.0
    assert backoff_delay(3, 1.0, 60.0, None, fixed(0.0)) == 0.0


def test_ratio_jitter_bounds() -> None:
    assert backoff_delay(2, 1.0, 60.0, 0.25, fixed(0.0)) == pytest.approx(1.5)
    assert backoff_delay(2, 1.0, 60.0, 0.25, fixed(1.0)) == pytest.approx(2.5)
    assert backoff_delay(6, 1.0, 32.0, 0.5, fixed(1.0)) == 32.0  # never above cap


def test_backoff_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        backoff_delay(0)
    with pytest.raises(ValueError):
        backoff_delay(1, jitter_ratio=1.5)


def err(status: int, body: str = "", headers: dict[str, str] | None = None) -> e.UcwaError:
    return error_from_response(status, headers or {}, body, "POST", "https://h/x", NOW)


def test_transient_errors_back_off() -> None:
    decision = decide(2, err(500), 5, NOW, policy=NO_JITTER)
    assert decision.retry and decision.delay_s == 2.0
    assert decide(1, e.TransportError("reset"), 5, NOW, policy=NO_JITTER).retry


def test_gives_up_at_max_attempts() -> None:
    decision = decide(5, err(500), 5, NOW)
    assert not decision.retry and "gave up" in decision.reason


def test_retry_after_seconds_honoured_with_jitter_on_top() -> None:
    error = err(429, '{"code":"TooManyRequests"}', {"Retry-After": "20"})
    decision = decide(1, error, 5, NOW, policy=RetryPolicy(retry_after_jitter=0.1), rng=fixed(1.0))
    assert decision.retry and decision.delay_s == pytest.approx(22.0)
    assert "Retry-After" in decision.reason


def test_retry_after_date_is_measured_from_now() -> None:
    error = err(503, "", {"Retry-After": "Wed, 01 May 2024 12:01:00 GMT"})
    later = NOW + timedelta(seconds=45)
    assert decide(1, error, 5, later, policy=NO_JITTER).delay_s == pytest.approx(15.0)


def test_retry_after_beyond_bound_is_not_waited_for() -> None:
    error = err(503, "", {"Retry-After": "3600"})
    decision = decide(1, error, 5, NOW, policy=RetryPolicy(max_retry_after=300))
    assert not decision.retry and decision.delay_s == 3600


def test_throttled_without_retry_after_backs_off() -> None:
    decision = decide(3, err(429), 5, NOW, policy=NO_JITTER)
    assert decision.retry and decision.delay_s == 4.0


@pytest.mark.parametrize(
    "error",
    [
        err(410, '{"code":"Gone","subcode":"InactiveApplicationExpired"}'),
        err(410, '{"code":"Gone","subcode":"CannotRedirect"}'),
        err(410, '{"code":"Gone","subcode":"TooManyApplications"}'),
        err(400, '{"error":"invalid_grant"}'),
        err(400, '{"code":"BadRequest","subcode":"ParameterValidationFailure"}'),
        err(404, '{"code":"NotFound"}'),
        err(413, '{"code":"EntityTooLarge"}'),
        err(409, '{"code":"Conflict","subcode":"PGetReplaced"}'),
        err(418),
    ],
)
def test_never_retried(error: e.UcwaError) -> None:
    decision = decide(1, error, 5, NOW)
    assert not decision.retry


def test_application_not_found_retries_after_rebuild() -> None:
    decision = decide(1, err(404, '{"code":"NotFound","subcode":"ApplicationNotFound"}'), 5, NOW)
    assert decision.retry and "rebuild" in decision.reason


def test_auth_required_retries_at_once_then_backs_off() -> None:
    first = decide(1, err(401, "<html/>"), 5, NOW, policy=NO_JITTER)
    assert first.retry and first.delay_s == 0.0
    assert decide(2, err(401), 5, NOW, policy=NO_JITTER).delay_s == 2.0


def test_non_idempotent_ambiguous_outcome_is_not_resent() -> None:
    assert not decide(1, e.TransportError("read timeout"), 5, NOW, idempotent=False).retry
    assert not decide(1, err(500), 5, NOW, idempotent=False).retry
    # Throttling means nothing was executed: safe even for a POST.
    assert decide(1, err(429), 5, NOW, idempotent=False).retry
