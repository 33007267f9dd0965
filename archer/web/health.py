"""``GET /healthz`` (the process answers) and ``GET /readyz`` (it can take calls).

Layer: web. Readiness needs the database to answer within a short deadline.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

import trio
from quart import Blueprint

from archer.errors import StoreError

if TYPE_CHECKING:
    from archer.app import Services

#: A readiness probe that waits longer than this is worse than a 503.
READY_TIMEOUT: Final = 2.0


def health_blueprint(services: Services) -> Blueprint:
    blueprint = Blueprint("health", __name__)

    # Async on purpose: Quart would run a sync view in a worker thread.
    @blueprint.get("/healthz")
    async def healthz() -> tuple[str, int]:  # noqa: ASYNC124
        return "ok\n", 200

    @blueprint.get("/readyz")
    async def readyz() -> tuple[str, int]:
        if services.drain.draining:
            return f"draining: {services.drain.live_calls} calls still live\n", 503
        with trio.move_on_after(READY_TIMEOUT) as deadline:
            try:
                await services.store.check()
            except StoreError as exc:
                return f"database unavailable: {exc}\n", 503
        if deadline.cancelled_caught:
            return "database did not answer in time\n", 503
        return "ready\n", 200

    return blueprint
