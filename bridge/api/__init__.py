"""The HTTP API: ``create_app(settings, redis_client=None)`` builds the Flask application.

Gunicorn serves ``bridge.api.wsgi:app``, which reads its settings from the environment.
"""

from bridge.api.app import create_app

__all__ = ["create_app"]
