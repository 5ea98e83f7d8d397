"""Observability: JSON logs with secret redaction, Prometheus metrics and readiness checks.

May import ``outbound``, ``session``, ``webhooks`` and ``config``; ``logging`` and ``health``
import no metrics code, so probes and log set-up stay cheap.
"""
