"""The pure UCWA 2.0 protocol layer: links, data URIs, the Skype for Business HTML subset, auth
flows, errors, events, retry policy. No I/O, and imports nothing of ``bridge`` outside ``ucwa``.
"""
