"""Webhook delivery: signed Standard Webhooks POSTs of bridge events, with retries and a log.

Producers call ``outbox.stage_event``; RQ runs ``delivery``. May import ``net`` and ``config``.
"""
