"""``GET /metrics``: the server's Prometheus metrics in the text exposition format.

Layer: web. Serves ``Metrics.render()``; no signature check (Prometheus scrapes it), so keep the
route off the public load balancer: the labels hold no caller data, but operations are nobody
else's business.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from quart import Blueprint, Response

if TYPE_CHECKING:
    from archer.metrics import Metrics


def metrics_blueprint(metrics: Metrics) -> Blueprint:
    blueprint = Blueprint("metrics", __name__)

    # Async on purpose: Quart would run a sync view in a worker thread.
    @blueprint.get("/metrics")
    async def metrics_text() -> Response:  # noqa: ASYNC124
        body, content_type = metrics.render()
        return Response(body, content_type=content_type)

    return blueprint
