"""Process entry points of ucwa-bridge: RQ jobs and the UCWA poller.

Depends on ``bridge``; ``bridge`` never imports this package.
"""
