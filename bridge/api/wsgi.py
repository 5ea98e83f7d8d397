"""The WSGI entry point for gunicorn: ``gunicorn bridge.api.wsgi:app``.

The app is built on first access, so importing this module reads no environment.
"""

from __future__ import annotations

import sys
from typing import Any

from flask import Flask

from bridge.api.app import create_app
from bridge.config.settings import CONFIG_EXIT_CODE, ConfigError, Settings

_app: Flask | None = None


def get_app() -> Flask:
    """Build the app from ``BRIDGE_*`` variables once; exit 78 with one line per
    variable that is wrong."""
    global _app
    if _app is None:
        try:
            settings = Settings.from_env("api")
        except ConfigError as exc:
            for line in exc.lines:
                print(f"configuration error: {line}", file=sys.stderr)
            raise SystemExit(CONFIG_EXIT_CODE) from None
        _app = create_app(settings)
    return _app


def __getattr__(name: str) -> Any:
    if name == "app":
        return get_app()
    raise AttributeError(name)
