"""HTTP client plumbing for servers we do not trust: a total deadline and capped body reads for
``requests`` sessions, shared by the UCWA transport and webhook delivery. Imports nothing
else of ``bridge``.
"""
