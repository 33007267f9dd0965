"""``GET /healthz`` (the process answers) and ``GET /readyz`` (it can take calls).

Layer: web. Readiness needs the database to answer within a short deadline, the process not to
be draining, and room below ``MAX_ACTIVE_CALLS`` (``archer.web.capacity``). ``/readyz``'s body is
always JSON with the counts, ready or not: ``{"ready": false, "reason": "at capacity",
"live_calls": 50, "reserved_calls": 0, "max_active_calls": 50, "draining": false}``.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Final

import trio
from quart import Blueprint, Response

from archer.errors import StoreError

if TYPE_CHECKING:
    from archer.web.services import Services

#: A readiness probe that waits longer than this is worse than a 503.
READY_TIMEOUT: Final = 2.0


def health_blueprint(services: Services) -> Blueprint:
    blueprint = Blueprint("health", __name__)

    # Async on purpose: Quart would run a sync view in a worker thread.
    @blueprint.get("/healthz")
    async def healthz() -> tuple[str, int]:  # noqa: ASYNC124
        return "ok\n", 200

    def answer(reason: str | None) -> Response:
        body = {"ready": reason is None, "reason": reason, **services.capacity.snapshot()}
        return Response(
            json.dumps(body) + "\n",
            status=200 if reason is None else 503,
            content_type="application/json",
        )

    @blueprint.get("/readyz")
    async def readyz() -> Response:
        if services.drain.draining:
            return answer("draining")
        if services.capacity.full:
            # Checked before the database: a full process must stop getting calls even if
            # the database is slow to answer.
            return answer("at capacity")
        with trio.move_on_after(READY_TIMEOUT) as deadline:
            try:
                await services.store.check()
            except StoreError as exc:
                return answer(f"database unavailable: {exc}")
        if deadline.cancelled_caught:
            return answer("database did not answer in time")
        return answer(None)

    return blueprint
