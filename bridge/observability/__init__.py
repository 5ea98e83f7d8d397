"""Observability: JSON logs with secret redaction, Prometheus metrics and readiness checks.

May import ``inbound``, ``outbound``, ``session``, ``webhooks`` and ``config``; ``logging`` and
``health`` import no metrics code, so probes and log set-up stay cheap.
"""
