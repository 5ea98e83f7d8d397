"""Configuration and Redis plumbing every role uses: ``BRIDGE_*`` settings, Redis URLs
(plain or Sentinel), reply decoding and a private redis-server. Imports nothing else of ``bridge``.
"""
