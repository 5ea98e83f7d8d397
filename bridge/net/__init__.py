"""HTTP client plumbing for servers we do not trust: a total deadline, capped body reads and
requests prepared without ``Session.request``'s per-request merge, for ``requests`` sessions;
shared by the UCWA transport and webhook delivery. Imports nothing else of ``bridge``.
"""
