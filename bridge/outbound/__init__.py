"""Outbound: accepting a message, the resumable send state machine, finishing it, status events.

May import ``session``, ``webhooks``, ``ucwa`` and ``config``; never ``inbound``, ``api`` or above.
"""
