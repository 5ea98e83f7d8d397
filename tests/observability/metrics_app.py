"""A tiny WSGI app for the multiprocess metrics tests: ``/hit`` counts, ``/metrics`` exposes;
every request is counted by the HTTP metrics, as in the API.

Served by gunicorn with ``bridge.observability.gunicorn_conf`` and several workers.
"""

from __future__ import annotations

import os
import time

from flask import Flask, Response

from bridge.observability.metrics import (
    instrument_http,
    metrics_response,
    observe_ucwa_request,
)

app = Flask(__name__)
instrument_http(app)


@app.get("/hit")
def hit() -> Response:
    observe_ucwa_request("sendMessage", "POST", 201, 0.05)
    time.sleep(0.02)  # keeps a sync worker busy, so concurrent hits spread over the workers
    return Response(str(os.getpid()), mimetype="text/plain")


@app.get("/metrics")
def metrics() -> Response:
    return metrics_response()
