"""The simulator's state objects: accounts, tokens, applications, conversations, invitations.

Plain data with href helpers; behaviour lives in the switchboard and the handlers.
"""

from __future__ import annotations

import secrets
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from ucwasim.channel import EventChannel
from ucwasim.config import SimUser
from ucwasim.datauri import Content
from ucwasim.scheduler import Timer

APPLICATIONS_PATH = "/ucwa/oauth/v1/applications"


def random_hex(nbytes: int = 16) -> str:
    return secrets.token_hex(nbytes)


def wall_ms() -> int:
    return int(time.time() * 1000)


def sip_user(sip: str) -> str:
    """The path form of a SIP URI, as the server puts it in participant and contact hrefs."""
    return sip[4:] if sip.lower().startswith("sip:") else sip


@dataclass
class Account:
    user: SimUser
    inbox: list[dict[str, Any]] = field(default_factory=list)
    sent: list[dict[str, Any]] = field(default_factory=list)
    # When the user last used an application (makeMeAvailable, reportMyActivity): the
    # ``lastActive`` of its contactPresence.
    last_active_ms: int = field(default_factory=wall_ms)

    @property
    def sip(self) -> str:
        return self.user.sip

    @property
    def name(self) -> str:
        return self.user.name


@dataclass
class Token:
    value: str
    sip: str
    expires_at: float
    uses: int = 0  # requests it authorised (a 401 fault spares a token's first use)


@dataclass
class Message:
    number: int
    direction: str
    content: Content
    time_ms: int
    status: str = "Pending"
    operation_id: str | None = None
    outbox_entry: dict[str, Any] | None = None


@dataclass
class Invitation:
    id: str
    conversation: Conversation
    direction: str
    operation_id: str | None
    first: Content | None
    state: str = "Connecting"
    answer_links: bool = True
    timer: Timer | None = None
    outbox_entry: dict[str, Any] | None = None
    # Messages the remote typed while this invitation was ringing: its client holds them and
    # sends them, in order, once the invitation is accepted (after the first message's repeat).
    held: list[tuple[Content, dict[str, Any]]] = field(default_factory=list)

    @property
    def href(self) -> str:
        return f"{self.conversation.app.href}/communication/messagingInvitations/{self.id}"


@dataclass
class Conversation:
    id: str
    app: Application
    peer_sip: str
    peer_name: str
    direction: str
    thread_id: str
    subject: str
    importance: str
    state: str = "Connecting"
    messaging_state: str = "Connecting"
    negotiated: list[str] = field(default_factory=lambda: ["Plain"])
    peer: Conversation | None = None
    bot: Account | None = None
    invitation: Invitation | None = None
    messages: dict[int, Message] = field(default_factory=dict)
    remote_joined: bool = False
    remote_typing: Timer | None = None
    local_typing: Timer | None = None
    timers: list[Timer] = field(default_factory=list)
    alive: bool = True

    @property
    def href(self) -> str:
        return f"{self.app.href}/communication/conversations/{self.id}"

    @property
    def messaging_href(self) -> str:
        return self.href + "/messaging"

    @property
    def local_href(self) -> str:
        return f"{self.href}/participants/{sip_user(self.app.account.sip)}"

    @property
    def remote_href(self) -> str:
        return f"{self.href}/participants/{sip_user(self.peer_sip)}"

    def next_number(self) -> int:
        return max(self.messages, default=0) + 1


@dataclass
class Application:
    id: str
    account: Account
    culture: str
    endpoint_id: str
    user_agent: str
    instance_id: str
    channel: EventChannel
    created_at: float = field(default_factory=time.monotonic)
    available: bool = False
    modalities: list[str] = field(default_factory=list)
    formats: list[str] = field(default_factory=lambda: ["Plain"])
    sign_in_as: str = "Online"
    put_marker: str = field(default_factory=lambda: str(uuid.uuid4()))
    # The ``id`` property: its own value, never the id in the href (see render.application).
    telemetry_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    etag: str = field(default_factory=lambda: str(secrets.randbelow(4_000_000_000)))
    last_activity: float = field(default_factory=time.monotonic)
    conversations: dict[str, Conversation] = field(default_factory=dict)
    invitations: dict[str, Invitation] = field(default_factory=dict)
    alive: bool = True

    @property
    def href(self) -> str:
        return f"{APPLICATIONS_PATH}/{self.id}"

    @property
    def identity(self) -> tuple[str, str, str, str]:
        return (self.culture.lower(), self.endpoint_id, self.user_agent, self.instance_id)

    def new_etag(self) -> None:
        self.etag = str(secrets.randbelow(4_000_000_000))
