"""``POST /calls`` and ``GET /calls/{id}``: the bank's systems ask Archer to ring a customer.

Layer: web. Thin: check the bearer key, parse the body (``archer.call.outbound``), hand the
request to the outbound queue, answer. The dispatcher (any instance) places the call later.

Rules:

- Every route here needs ``Authorization: Bearer <key>`` of a live key (``archer keys
  create``); a missing, wrong or revoked key is 401 before anything is read or written. The key
  is never logged; a key's database id is.
- A key sees only the calls it placed: another key's call is a 404, as if it did not exist,
  so one system's key cannot read whom another system rang.
- Bad input is a 4xx with one line of text saying what is wrong, and nothing is written.
- ``Idempotency-Key``: the same key again (from the same API key) answers the first request's
  body and queues nothing (the database's unique index decides, so it holds across instances).
- Nothing about the customer is logged: the request id, purpose and transaction id only.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Final

import structlog
from quart import Blueprint, Response, request

from archer.call.outbound import (
    MAX_IDEMPOTENCY_KEY,
    OutboundRequestError,
    UnknownTransactionError,
    parse_call_request,
)
from archer.errors import StoreError

if TYPE_CHECKING:
    from archer.call.ports import OutboundQueue
    from archer.web.services import Services

log = structlog.get_logger(__name__)

#: A ``POST /calls`` body is three short fields.
MAX_BODY_BYTES: Final = 4096


def _text(body: str, status: int, **headers: str) -> Response:
    return Response(body + "\n", status=status, content_type="text/plain", headers=headers)


def _json(body: object, status: int) -> Response:
    return Response(json.dumps(body), status=status, content_type="application/json")


def calls_blueprint(services: Services) -> Blueprint:
    blueprint = Blueprint("calls", __name__)

    async def authorised(queue: OutboundQueue) -> int | None:
        """The caller's API key id, or None (no key, a wrong one, a revoked one)."""
        scheme, _, key = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            return None
        return await queue.key_id(key.strip())

    def unauthorised() -> Response:
        return _text(
            "a valid API key is required: Authorization: Bearer <key>",
            401,
            **{"WWW-Authenticate": 'Bearer realm="archer"'},
        )

    @blueprint.post("/calls")
    async def place_call() -> Response:
        queue = services.outbound
        if queue is None:
            return _text("outbound calls are not enabled on this instance", 503)
        try:
            key_id = await authorised(queue)
        except StoreError as exc:
            log.warning("outbound.store_unavailable", error=str(exc))
            return _text("database unavailable", 503)
        if key_id is None:
            log.warning("outbound.unauthorised", route="POST /calls")
            return unauthorised()
        idempotency_key = request.headers.get("Idempotency-Key")
        if idempotency_key is not None and not 0 < len(idempotency_key) <= MAX_IDEMPOTENCY_KEY:
            return _text(f"Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} characters", 400)
        if (request.content_length or 0) > MAX_BODY_BYTES:
            return _text(f"the body is larger than {MAX_BODY_BYTES} bytes", 413)
        raw = await request.get_data(as_text=False)
        if len(raw) > MAX_BODY_BYTES:
            return _text(f"the body is larger than {MAX_BODY_BYTES} bytes", 413)
        try:
            call = parse_call_request(json.loads(raw))
        except (UnicodeDecodeError, json.JSONDecodeError):
            return _text("the body must be JSON", 400)
        except OutboundRequestError as exc:
            return _text(str(exc), 400)
        try:
            queued = await queue.enqueue(call, api_key_id=key_id, idempotency_key=idempotency_key)
        except UnknownTransactionError as exc:
            return _text(str(exc), 422)
        except StoreError as exc:
            log.warning("outbound.store_unavailable", error=str(exc))
            return _text("database unavailable", 503)
        log.info(
            "outbound.queued" if queued.created else "outbound.repeated",
            request_id=queued.id,
            api_key_id=key_id,
            purpose=call.purpose,
            transaction_id=call.transaction_id,
        )
        return _json({"id": queued.id, "status": queued.status}, 202)

    @blueprint.get("/calls/<int:request_id>")
    async def call_state(request_id: int) -> Response:
        queue = services.outbound
        if queue is None:
            return _text("outbound calls are not enabled on this instance", 503)
        try:
            key_id = await authorised(queue)
            if key_id is None:
                return unauthorised()
            view = await queue.view(request_id, api_key_id=key_id)
        except StoreError as exc:
            log.warning("outbound.store_unavailable", error=str(exc))
            return _text("database unavailable", 503)
        if view is None:
            return _text(f"no outbound call with id {request_id}", 404)
        return _json(view.as_json(), 200)

    return blueprint
