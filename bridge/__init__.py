"""ucwa-bridge: send Skype for Business IMs with one HTTP call, receive replies as webhooks.

The library and the HTTP API; process entry points live in ``workers``.
"""
