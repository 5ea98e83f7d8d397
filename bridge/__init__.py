"""ucwa-bridge: send Skype for Business IMs with one HTTP call, receive replies as webhooks.

Entry points and wiring (``cli``, ``demo``, ``hooks``) sit here on top of the parts; processes
run from ``workers``, which ``bridge`` never imports.
"""
