import pytest

from bridge.ucwa.events import Reason
from bridge.ucwa.failures import FailureCode, RetryClass, classify_failure


@pytest.mark.parametrize(
    ("code", "subcode", "state", "expected", "retry"),
    [
        ("RemoteFailure", "Declined", "Failed", FailureCode.DECLINED, RetryClass.NEVER),
        (None, None, "Declined", FailureCode.DECLINED, RetryClass.NEVER),
        ("RemoteFailure", "DestinationNotFound", "Failed", FailureCode.NOT_FOUND, RetryClass.NEVER),
        ("RemoteFailure", "Timeout", "Failed", FailureCode.NO_ANSWER, RetryClass.LATER),
        ("RemoteFailure", "Missed", "Failed", FailureCode.NO_ANSWER, RetryClass.LATER),
        ("Timeout", None, "Failed", FailureCode.NO_ANSWER, RetryClass.LATER),
        ("RemoteFailure", "TemporarilyUnavailable", None, FailureCode.OFFLINE, RetryClass.LATER),
        ("RemoteFailure", "Unreachable", None, FailureCode.OFFLINE, RetryClass.LATER),
        ("RemoteFailure", "Busy", None, FailureCode.BUSY, RetryClass.LATER),
        ("RemoteFailure", "DoNotDisturb", None, FailureCode.DO_NOT_DISTURB, RetryClass.LATER),
        ("Forbidden", "FederationRequired", None, FailureCode.NOT_ALLOWED, RetryClass.NEVER),
        ("RemoteFailure", "NotAllowed", None, FailureCode.NOT_ALLOWED, RetryClass.NEVER),
        ("RemoteFailure", "ModalityNotSupported", None, FailureCode.NOT_ALLOWED, RetryClass.NEVER),
        ("Forbidden", None, None, FailureCode.NOT_ALLOWED, RetryClass.NEVER),
        ("LocalFailure", "Canceled", "Cancelled", FailureCode.CANCELLED, RetryClass.NEVER),
        (None, None, "Cancelled", FailureCode.CANCELLED, RetryClass.NEVER),
        ("ServiceFailure", None, "Failed", FailureCode.SERVICE_FAILURE, RetryClass.BACKOFF),
        (
            "ServiceFailure",
            "CallbackChannelError",
            None,
            FailureCode.SERVICE_FAILURE,
            RetryClass.BACKOFF,
        ),
        ("GatewayTimeout", None, None, FailureCode.SERVICE_FAILURE, RetryClass.BACKOFF),
    ],
)
def test_table(
    code: str | None,
    subcode: str | None,
    state: str | None,
    expected: FailureCode,
    retry: RetryClass,
) -> None:
    failure = classify_failure(Reason(code, subcode, "msg") if code or subcode else None, state)
    assert failure.code is expected
    assert failure.retry is retry
    assert failure.retryable is (retry is not RetryClass.NEVER)


def test_subcode_wins_over_code() -> None:
    # code Timeout alone would be no_answer; the subcode says who failed.
    assert classify_failure(Reason("Timeout", "Busy")).code is FailureCode.BUSY
    assert classify_failure(Reason("ServiceFailure", "Declined")).code is FailureCode.DECLINED


def test_case_insensitive() -> None:
    assert classify_failure(Reason("remotefailure", "DECLINED")).code is FailureCode.DECLINED


def test_unknown_keeps_raw_and_is_not_retried() -> None:
    failure = classify_failure(Reason("RemoteFailure", "QuantumEntangled", "weird"), "Failed")
    assert failure.code is FailureCode.UNKNOWN
    assert failure.retry is RetryClass.NEVER
    assert (failure.raw_code, failure.raw_subcode, failure.message, failure.state) == (
        "RemoteFailure",
        "QuantumEntangled",
        "weird",
        "Failed",
    )
    assert classify_failure(None).code is FailureCode.UNKNOWN


def test_codes_are_stable_strings() -> None:
    assert FailureCode.DO_NOT_DISTURB == "do_not_disturb"
    assert classify_failure(Reason(None, "Busy")).code.value == "busy"
