"""Observability: JSON logs with secret redaction, Prometheus metrics and readiness checks.

``logging`` and ``health`` import no metrics code, so probes and log set-up stay cheap.
"""
