"""The account's one UCWA application and its I/O shell: bootstrap, client, transport, the
published session, the poller lease and the conversation registry. May import ``net``, ``ucwa``
and ``config`` only.
"""
