"""The pure UCWA 2.0 protocol layer: links, data URIs, auth flows, errors, events, retry policy.

Nothing here performs I/O; a thin shell sends the requests these modules describe.
"""
