"""``GET /metrics``: the server's Prometheus metrics in the text exposition format.

Layer: web. Serves ``Metrics.render()``; no signature check (Prometheus scrapes it), so keep the
route off the public load balancer: the labels hold no caller data, but operations are nobody
else's business.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import trio
from quart import Blueprint, Response

if TYPE_CHECKING:
    from archer.metrics import Metrics


def metrics_blueprint(metrics: Metrics) -> Blueprint:
    blueprint = Blueprint("metrics", __name__)

    @blueprint.get("/metrics")
    async def metrics_text() -> Response:
        # In a thread: a render takes milliseconds (5-10 ms measured, more with --workers,
        # which reads every worker's files), time the calls' audio must not wait for.
        body, content_type = await trio.to_thread.run_sync(metrics.render)
        return Response(body, content_type=content_type)

    return blueprint
