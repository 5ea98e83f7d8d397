"""Inbound: what the UCWA event channel says, applied to Redis; IMs staged as webhook events.

May import ``outbound`` (events settle sends), ``session``, ``webhooks``, ``ucwa`` and ``config``.
"""
