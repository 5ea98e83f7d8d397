"""Configuration and Redis plumbing every role uses: ``BRIDGE_*`` settings, Redis URLs
(plain or Sentinel), reply decoding, a private redis-server, and redis-py's idle-connection
check under gevent. Imports nothing else of ``bridge``.
"""
