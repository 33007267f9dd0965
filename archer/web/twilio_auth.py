"""Who may drive a call: Twilio's request signatures on webhooks and the media-stream upgrade.

Layer: web. The public URL that Twilio signed is rebuilt from ``WEBHOOK_BASE_URL``, never from
the Host header, because behind a load balancer or tunnel the app sees another host and scheme.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import structlog
from quart import request

from archer.twilio.signature import SIGNATURE_SETTINGS_HEADER, webhook_url

if TYPE_CHECKING:
    from collections.abc import Callable

    from archer.web.services import Services

log = structlog.get_logger(__name__)


async def signed_form(services: Services, path: str) -> dict[str, str] | None:
    """The webhook's form fields if its ``X-Twilio-Signature`` is valid, else None (logged)."""
    params = (await request.form).to_dict()
    if not services.settings.twilio_validate_signatures:
        return params
    url = webhook_url(services.settings.webhook_base_url, path)
    query = request.query_string.decode("latin-1")
    if query:
        # Twilio signs the URL exactly as it requested it, query string included.
        url = f"{url}?{query}"
    if services.signatures.valid_webhook(
        url,
        params,
        request.headers.get("X-Twilio-Signature"),
        request.headers.get(SIGNATURE_SETTINGS_HEADER),
    ):
        return params
    log.warning("twilio.signature_rejected", path=path)
    services.metrics.signature_rejected(path)
    return None


def stream_upgrade_signed(
    services: Services,
    header: Callable[[str], str | None],
    path: str,
    query: str = "",
) -> bool:
    """True if the media-stream upgrade's signature is Twilio's, of the public ``wss://`` URL.

    ``header`` reads one of the upgrade's headers by name (the signature, and the SharedKey
    settings when Twilio signed with one); ``path`` is the path the upgrade asked for (logged
    when refused); ``query`` its query string (without ``?``), which the signature must cover
    too, as Twilio signs the full URL.
    """
    if not services.settings.twilio_validate_signatures:
        return True
    url = services.settings.media_stream_url + (f"?{query}" if query else "")
    signature = header("X-Twilio-Signature")
    if services.signatures.valid_stream_upgrade(url, signature, header(SIGNATURE_SETTINGS_HEADER)):
        return True
    log.warning("twilio.signature_rejected", path=path)
    services.metrics.signature_rejected("/ws/cartesia")
    return False
