"""Who talks to whom: routes invitations and messages between applications and simulated users.

Every public method expects the world lock to be held; delayed steps re-acquire it.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

from ucwasim import sequences
from ucwasim.config import SimUser
from ucwasim.datauri import Content
from ucwasim.errors import ControlError, UcwaError
from ucwasim.model import (
    Account,
    Application,
    Conversation,
    Invitation,
    Message,
    random_hex,
    wall_ms,
)
from ucwasim.scheduler import Timer
from ucwasim.sequences import reason
from ucwasim.world import World, app_expired, app_not_found

BOT_FORMATS = ("Plain", "Html")

DECLINED = reason("RemoteFailure", "Declined", "Your invitation was declined.")
NO_ANSWER = reason("RemoteFailure", "Timeout", "The person you invited did not answer.")
OFFLINE = reason(
    "RemoteFailure", "TemporarilyUnavailable", "The person you invited is not available."
)
UNKNOWN_USER = reason(
    "RemoteFailure", "DestinationNotFound", "The person you invited does not exist."
)
CANCELED = reason("LocalFailure", "Canceled", "The invitation was canceled.")
REMOTE_CANCELED = reason("RemoteFailure", "Canceled", "The caller canceled the invitation.")
LOCAL_DECLINED = reason("LocalFailure", "Declined", "The invitation was declined.")
MISSED = reason("LocalFailure", "Timeout", "The invitation was not answered in time.")
NOT_FETCHED = reason("RemoteFailure", "Timeout", "The message was not delivered in time.")


class Switchboard:
    def __init__(self, world: World) -> None:
        self.world = world

    # -- plumbing -----------------------------------------------------------------------------

    def _later(self, seconds: float, fn: Callable[[], None]) -> Timer:
        def locked() -> None:
            with self.world.lock:
                fn()

        return self.world.scheduler.call_later(self.world.scaled(seconds), locked)

    def _new_conversation(
        self,
        app: Application,
        peer: Account,
        direction: str,
        subject: str,
        importance: str,
        thread_id: str,
    ) -> Conversation:
        conv = Conversation(
            id=random_hex(8),
            app=app,
            peer_sip=peer.sip,
            peer_name=peer.name,
            direction=direction,
            thread_id=thread_id,
            subject=subject,
            importance=importance,
            state="Incoming" if direction == "Incoming" else "Connecting",
        )
        app.conversations[conv.id] = conv
        return conv

    def _new_invitation(
        self, conv: Conversation, direction: str, operation_id: str | None, first: Content | None
    ) -> Invitation:
        inv = Invitation(random_hex(16), conv, direction, operation_id, first)
        conv.invitation = inv
        conv.app.invitations[inv.id] = inv
        return inv

    # -- lifetimes ------------------------------------------------------------------------------

    def sweep(self) -> None:
        """Expire applications whose client went quiet (checked lazily on every request)."""
        cfg = self.world.cfg
        now = time.monotonic()
        for app in list(self.world.apps.values()):
            if not app.channel.parked and app.channel.idle_for() > self.world.scaled(
                cfg.app_expiry
            ):
                error = app_expired() if cfg.app_expiry_status == 410 else None
                self.remove_application(app, error)
            elif app.available and now - app.last_activity > self.world.scaled(cfg.activity_expiry):
                self.remove_application(app, app_expired())

    def remove_application(self, app: Application, error: UcwaError | None = None) -> None:
        tomb = error or app_not_found()
        app.alive = False
        for conv in list(app.conversations.values()):
            self._end(conv, notify_local=False)
        app.channel.close(tomb)
        self.world.tombstones[app.id] = tomb
        self.world.apps.pop(app.id, None)

    def resume(self, app: Application) -> None:
        """The client was away too long: close its conversations without telling it."""
        for conv in list(app.conversations.values()):
            self._end(conv, notify_local=False)
        app.channel.reset_for_resume()

    # -- outgoing invitations --------------------------------------------------------------

    def start_messaging(
        self,
        app: Application,
        to: str,
        subject: str,
        importance: str,
        operation_id: str | None,
        thread_id: str | None,
        first: Content | None,
    ) -> Invitation:
        peer = self.world.account(to) or Account(_stranger(to))
        conv = self._new_conversation(
            app, peer, "Outgoing", subject, importance, thread_id or uuid.uuid4().hex
        )
        inv = self._new_invitation(conv, "Outgoing", operation_id, first)
        sequences.outgoing_started(inv, new_conversation=True)
        self._route(inv)
        return inv

    def add_messaging(
        self, conv: Conversation, operation_id: str | None, first: Content | None
    ) -> Invitation:
        conv.messaging_state = "Connecting"
        inv = self._new_invitation(conv, "Outgoing", operation_id, first)
        sequences.outgoing_started(inv, new_conversation=False)
        self._route(inv)
        return inv

    def _route(self, inv: Invitation) -> None:
        conv = inv.conversation
        account = self.world.account(conv.peer_sip)
        if account is None:
            inv.timer = self._later(
                self.world.cfg.offline_delay, lambda: self._fail(inv, UNKNOWN_USER)
            )
            return
        target = self.world.available_app(account.sip, exclude=conv.app)
        if target is not None:
            self._invite_application(inv, target)
            return
        cfg = self.world.cfg
        behaviour = account.user.behaviour
        if behaviour in ("accept", "echo"):
            inv.timer = self._later(cfg.accept_delay, lambda: self._bot_accepts(inv, account))
        elif behaviour == "decline":
            inv.timer = self._later(cfg.accept_delay, lambda: self._fail(inv, DECLINED))
        elif behaviour == "no-answer":
            inv.timer = self._later(cfg.invitation_timeout, lambda: self._fail(inv, NO_ANSWER))
        else:
            inv.timer = self._later(cfg.offline_delay, lambda: self._fail(inv, OFFLINE))

    def _invite_application(self, inv: Invitation, target: Application) -> None:
        conv = inv.conversation
        caller = conv.app.account
        other = self._new_conversation(
            target, caller, "Incoming", conv.subject, conv.importance, conv.thread_id
        )
        conv.peer, other.peer = other, conv
        incoming = self._new_invitation(other, "Incoming", None, inv.first)
        sequences.incoming_started(incoming, new_conversation=True)
        incoming.timer = self._later(
            self.world.cfg.invitation_timeout, lambda: self._unanswered(incoming)
        )

    def _bot_accepts(self, inv: Invitation, account: Account) -> None:
        conv = inv.conversation
        if inv.state != "Connecting" or not conv.alive:
            return
        conv.bot = account
        self._connect(inv, BOT_FORMATS)
        if inv.first is not None:
            self._bot_receives(conv, inv.first)

    def _connect(self, inv: Invitation, peer_formats: tuple[str, ...] | list[str]) -> None:
        conv = inv.conversation
        inv.state = "Connected"
        first_join = not conv.remote_joined
        conv.state = conv.messaging_state = "Connected"
        conv.remote_joined = True
        conv.negotiated = [
            f for f in ("Plain", "Html") if f in conv.app.formats and f in peer_formats
        ]
        sequences.outgoing_connected(inv, first_join)

    def _fail(self, inv: Invitation, why: dict[str, str], state: str = "Failed") -> None:
        conv = inv.conversation
        if inv.state != "Connecting" or not conv.alive:
            return
        inv.state = state
        if inv.timer:
            inv.timer.cancel()
        sequences.invitation_failed(inv, why)
        conv.messaging_state = "Disconnected"
        if conv.remote_joined:
            sequences.messaging_updated(conv)
        else:
            self._end(conv, notify_local=True, notify_peer=False)

    def cancel(self, inv: Invitation) -> None:
        peer = inv.conversation.peer
        self._fail(inv, CANCELED, state="Cancelled")
        if peer is not None and peer.alive and peer.invitation is not None:
            self._fail(peer.invitation, REMOTE_CANCELED)

    # -- incoming invitations (answered by an application) ---------------------------------

    def accept(self, inv: Invitation) -> None:
        conv = inv.conversation
        if inv.timer:
            inv.timer.cancel()
        inv.state = "Connected"
        conv.state = conv.messaging_state = "Connected"
        conv.remote_joined = True
        peer_formats = conv.peer.app.formats if conv.peer else list(BOT_FORMATS)
        conv.negotiated = [
            f for f in ("Plain", "Html") if f in conv.app.formats and f in peer_formats
        ]
        sequences.incoming_accepted(inv)
        outbox = inv.outbox_entry
        if conv.peer is not None and conv.peer.invitation is not None:
            self._connect(conv.peer.invitation, conv.app.formats)
        if inv.first is not None:
            self._app_receives(conv, inv.first, outbox)
        elif outbox is not None:
            outbox["status"] = "delivered"
        for content, entry in inv.held:
            self._app_receives(conv, content, entry)
        inv.held.clear()

    def decline(self, inv: Invitation) -> None:
        self._refuse(inv, LOCAL_DECLINED, DECLINED, "Declined")

    def _unanswered(self, inv: Invitation) -> None:
        self._refuse(inv, MISSED, NO_ANSWER, "Failed")

    def _refuse(
        self, inv: Invitation, local: dict[str, str], remote: dict[str, str], state: str
    ) -> None:
        conv = inv.conversation
        if inv.state != "Connecting" or not conv.alive:
            return
        peer = conv.peer
        self._fail(inv, local, state)
        if peer is not None and peer.invitation is not None:
            self._fail(peer.invitation, remote)
        for entry in [inv.outbox_entry, *(held for _, held in inv.held)]:
            if entry is not None:
                entry.update(status="failed", reason=remote)
        inv.held.clear()

    # -- messages ----------------------------------------------------------------------------

    def send_message(
        self, conv: Conversation, content: Content, operation_id: str | None
    ) -> Message:
        msg = Message(conv.next_number(), "Outgoing", content, wall_ms(), operation_id=operation_id)
        conv.messages[msg.number] = msg

        def result(why: dict[str, str] | None) -> None:
            if msg.status != "Pending" or not conv.alive:
                return
            msg.status = "Succeeded" if why is None else "Failed"
            sequences.message_completed(conv, msg, why)

        if conv.peer is not None and conv.peer.alive:
            self._app_receives(conv.peer, content, None, on_result=result)
        elif conv.bot is not None:
            self._later(0, lambda: result(None))
            self._bot_receives(conv, content)
        else:
            self._later(0, lambda: result(NOT_FETCHED))
        return msg

    def _bot_receives(self, conv: Conversation, content: Content) -> None:
        bot = conv.bot
        assert bot is not None
        bot.inbox.append(
            {
                "from": conv.app.account.sip,
                "text": content.text,
                "html": content.html,
                "conversation": conv.id,
                "time": time.time(),
            }
        )
        if bot.user.behaviour == "echo":
            self._later(
                self.world.cfg.reply_delay,
                lambda: self._bot_echo(conv, content),
            )

    def _bot_echo(self, conv: Conversation, content: Content) -> None:
        bot = conv.bot
        if conv.alive and conv.messaging_state == "Connected" and bot is not None:
            entry = _outbox(bot, conv.app.account.sip, content, conv.id)
            self._app_receives(conv, content, entry)

    def _app_receives(
        self,
        conv: Conversation,
        content: Content,
        outbox: dict[str, Any] | None,
        on_result: Callable[[dict[str, str] | None], None] | None = None,
    ) -> None:
        """Queue an incoming message; it is lost if no P-GET carries it within the window."""
        msg = Message(conv.next_number(), "Incoming", content, wall_ms(), status="Succeeded")
        conv.messages[msg.number] = msg

        def fetched() -> None:
            if outbox is not None:
                outbox["status"] = "delivered"
            if on_result is not None:
                on_result(None)

        def expire() -> None:
            if conv.app.channel.withdraw(msg):
                conv.messages.pop(msg.number, None)
                if outbox is not None:
                    outbox.update(status="failed", reason=NOT_FETCHED)
                if on_result is not None:
                    on_result(NOT_FETCHED)

        sequences.message_completed(conv, msg, on_delivered=fetched)
        if self.world.cfg.conversation_updated_after_message:
            sequences.conversation_event(conv, "updated")
        conv.timers.append(self._later(self.world.cfg.message_timeout, expire))

    # -- typing and leaving --------------------------------------------------------------------

    def typing(self, conv: Conversation) -> None:
        """The peer of ``conv`` is typing: show it in ``conv``'s typingParticipants."""
        if not conv.alive or conv.messaging_state != "Connected":
            return
        if conv.remote_typing is None:
            sequences.typing(conv, "added")
        else:
            conv.remote_typing.cancel()

        def stop() -> None:
            if conv.alive and conv.remote_typing is not None:
                conv.remote_typing = None
                sequences.typing(conv, "deleted")

        conv.remote_typing = self._later(self.world.cfg.typing_duration, stop)

    def set_is_typing(self, conv: Conversation) -> None:
        if conv.peer is not None:
            self.typing(conv.peer)

    def end_conversation(self, conv: Conversation) -> None:
        """stopMessaging or DELETE by the local client."""
        inv = conv.invitation
        if inv is not None and inv.state == "Connecting":
            if inv.direction == "Outgoing":
                self.cancel(inv)
            else:
                self.decline(inv)
        if conv.alive:
            self._end(conv, notify_local=True)

    def _end(self, conv: Conversation, notify_local: bool, notify_peer: bool = True) -> None:
        if not conv.alive:
            return
        conv.messaging_state = "Disconnected"
        conv.state = "Disconnected"
        conv.alive = False
        for timer in [*conv.timers, conv.remote_typing, conv.local_typing]:
            if timer is not None:
                timer.cancel()
        if conv.invitation is not None and conv.invitation.timer is not None:
            conv.invitation.timer.cancel()
        if notify_local:
            sequences.ended_locally(conv)
        conv.app.conversations.pop(conv.id, None)
        peer = conv.peer
        if notify_peer and peer is not None and peer.alive:
            if peer.invitation is not None and peer.invitation.state == "Connecting":
                self._fail(peer.invitation, REMOTE_CANCELED)
            if peer.alive:
                self.remote_leaves(peer)

    def remote_leaves(self, conv: Conversation) -> None:
        conv.messaging_state = conv.state = "Disconnected"
        conv.alive = False
        for timer in [*conv.timers, conv.remote_typing]:
            if timer is not None:
                timer.cancel()
        sequences.remote_left(conv)
        conv.app.conversations.pop(conv.id, None)

    def remote_stops_messaging(self, conv: Conversation) -> None:
        conv.messaging_state = "Disconnected"
        sequences.remote_stopped_messaging(conv)

    # -- simulated users acting ----------------------------------------------------------------

    def bot_conversation(self, bot: Account, peer: Account) -> Conversation | None:
        """The newest live conversation between simulated user ``bot`` and ``peer``'s apps."""
        convs = [
            c
            for app in self.world.applications_of(peer)
            for c in app.conversations.values()
            if c.alive and c.bot is bot
        ]
        return convs[-1] if convs else None

    def bot_sends(self, bot: Account, to: Account, content: Content) -> dict[str, Any]:
        conv = self.bot_conversation(bot, to)
        if conv is not None and conv.messaging_state == "Connected":
            entry = _outbox(bot, to.sip, content, conv.id)
            self._app_receives(conv, content, entry)
            return entry
        target = self.world.available_app(to.sip)
        if target is None:
            raise ControlError(409, f"{to.sip} has no application that called makeMeAvailable")
        ringing = conv.invitation if conv is not None else None
        if (
            ringing is not None
            and ringing.direction == "Incoming"
            and ringing.state == "Connecting"
        ):
            # A client does not invite twice: it holds what is typed until the invitation is
            # answered, then sends it in order (after the server's repeat of the first message).
            entry = _outbox(bot, to.sip, content, ringing.conversation.id, status="invited")
            ringing.held.append((content, entry))
            return entry
        if conv is None:
            conv = self._new_conversation(target, bot, "Incoming", "", "Normal", uuid.uuid4().hex)
            new = True
        else:
            new = False
        conv.bot = bot
        entry = _outbox(bot, to.sip, content, conv.id, status="invited")
        inv = self._new_invitation(conv, "Incoming", None, content)
        inv.outbox_entry = entry
        sequences.incoming_started(inv, new_conversation=new)
        inv.timer = self._later(self.world.cfg.invitation_timeout, lambda: self._unanswered(inv))
        return entry


def _outbox(
    bot: Account, to: str, content: Content, conversation: str, status: str = "pending"
) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "to": to,
        "text": content.text,
        "html": content.html,
        "conversation": conversation,
        "time": time.time(),
        "status": status,
    }
    bot.sent.append(entry)
    return entry


def _stranger(sip: str) -> SimUser:
    """A placeholder for a SIP URI that is not a user of the domain (it can never answer)."""
    return SimUser(sip, "", name="")
