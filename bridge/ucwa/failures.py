"""Map the ``reason`` of a failed invitation or message (code, subcode, state) to a stable bridge
error code and how it may be retried. Subcodes win over codes, codes over the invitation state:

    bridge code       from (subcode / code / state)                              retry
    ---------------   ---------------------------------------------------------  -------
    declined          Declined, TransferDeclined; state Declined                 never
    not_found         DestinationNotFound, ConversationNotFound                  never
    no_answer         Timeout, Missed, NotAcceptable, Expired; code Timeout      later
    offline           TemporarilyUnavailable, Unreachable, Unavailable           later
    busy              Busy                                                       later
    do_not_disturb    DoNotDisturb                                               later
    not_allowed       FederationRequired, NotAllowed, ModalityNotSupported,      never
                      AnonymousNotAllowed; code Forbidden
    cancelled         Canceled; state Cancelled                                  never
    service_failure   CallbackChannelError, ExchangeTimeout, LimitExceeded,      backoff
                      TooManyConversations; code ServiceFailure, ServiceUnavailable,
                      GatewayTimeout, ExchangeServiceFailure, TooManyRequests
    unknown           anything else (raw code/subcode/message kept)              never
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from bridge.ucwa.events import Reason


class FailureCode(StrEnum):
    DECLINED = "declined"
    NOT_FOUND = "not_found"
    NO_ANSWER = "no_answer"
    OFFLINE = "offline"
    BUSY = "busy"
    DO_NOT_DISTURB = "do_not_disturb"
    NOT_ALLOWED = "not_allowed"
    CANCELLED = "cancelled"
    SERVICE_FAILURE = "service_failure"
    UNKNOWN = "unknown"


class RetryClass(StrEnum):
    NEVER = "never"  # permanent: report failed
    LATER = "later"  # recipient unavailable: retry per job policy, not immediately
    BACKOFF = "backoff"  # transient service trouble: retry with backoff


_RETRY = {
    FailureCode.NO_ANSWER: RetryClass.LATER,
    FailureCode.OFFLINE: RetryClass.LATER,
    FailureCode.BUSY: RetryClass.LATER,
    FailureCode.DO_NOT_DISTURB: RetryClass.LATER,
    FailureCode.SERVICE_FAILURE: RetryClass.BACKOFF,
}

_BY_SUBCODE = {
    "declined": FailureCode.DECLINED,
    "transferdeclined": FailureCode.DECLINED,
    "destinationnotfound": FailureCode.NOT_FOUND,
    "conversationnotfound": FailureCode.NOT_FOUND,
    "timeout": FailureCode.NO_ANSWER,
    "missed": FailureCode.NO_ANSWER,
    "notacceptable": FailureCode.NO_ANSWER,
    "expired": FailureCode.NO_ANSWER,
    "temporarilyunavailable": FailureCode.OFFLINE,
    "unreachable": FailureCode.OFFLINE,
    "unavailable": FailureCode.OFFLINE,
    "busy": FailureCode.BUSY,
    "donotdisturb": FailureCode.DO_NOT_DISTURB,
    "federationrequired": FailureCode.NOT_ALLOWED,
    "notallowed": FailureCode.NOT_ALLOWED,
    "modalitynotsupported": FailureCode.NOT_ALLOWED,
    "anonymousnotallowed": FailureCode.NOT_ALLOWED,
    "canceled": FailureCode.CANCELLED,
    "cancelled": FailureCode.CANCELLED,
    "callbackchannelerror": FailureCode.SERVICE_FAILURE,
    "exchangetimeout": FailureCode.SERVICE_FAILURE,
    "limitexceeded": FailureCode.SERVICE_FAILURE,
    "toomanyconversations": FailureCode.SERVICE_FAILURE,
}

_BY_CODE = {
    "timeout": FailureCode.NO_ANSWER,
    "forbidden": FailureCode.NOT_ALLOWED,
    "servicefailure": FailureCode.SERVICE_FAILURE,
    "serviceunavailable": FailureCode.SERVICE_FAILURE,
    "gatewaytimeout": FailureCode.SERVICE_FAILURE,
    "exchangeservicefailure": FailureCode.SERVICE_FAILURE,
    "toomanyrequests": FailureCode.SERVICE_FAILURE,
}

_BY_STATE = {
    "declined": FailureCode.DECLINED,
    "cancelled": FailureCode.CANCELLED,
    "canceled": FailureCode.CANCELLED,
}


@dataclass(frozen=True)
class DeliveryFailure:
    """A stable failure code for API callers, its retry class, and the raw server reason."""

    code: FailureCode
    retry: RetryClass
    raw_code: str | None = None
    raw_subcode: str | None = None
    message: str | None = None
    state: str | None = None

    @property
    def retryable(self) -> bool:
        return self.retry is not RetryClass.NEVER


def classify_failure(reason: Reason | None, state: str | None = None) -> DeliveryFailure:
    """Classify a failed invitation or message from its reason block and invitation state."""
    code = reason.code if reason else None
    subcode = reason.subcode if reason else None
    bridge_code = (
        _BY_SUBCODE.get((subcode or "").lower())
        or _BY_CODE.get((code or "").lower())
        or _BY_STATE.get((state or "").lower())
        or FailureCode.UNKNOWN
    )
    return DeliveryFailure(
        code=bridge_code,
        retry=_RETRY.get(bridge_code, RetryClass.NEVER),
        raw_code=code,
        raw_subcode=subcode,
        message=reason.message if reason else None,
        state=state,
    )
