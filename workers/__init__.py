"""Process entry points of ucwa-bridge: RQ jobs and the UCWA poller.

Depends on ``bridge``; only the command line (``bridge.cli``) starts them, no part of ``bridge``
imports this package.
"""
