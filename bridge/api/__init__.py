"""The HTTP API, every endpoint and its plumbing: ``create_app(settings, redis_client=None)``.

May import ``observability``, ``outbound``, ``session`` (the conversation registry, read only),
``webhooks``, ``ucwa`` and ``config``; gunicorn serves
``bridge.api.wsgi:app``.
"""

from bridge.api.app import create_app

__all__ = ["create_app"]
