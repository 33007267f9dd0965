"""``X-Twilio-Signature`` checks for webhooks and for the media-stream WebSocket upgrade.

Layer: pure protocol (it wraps twilio's ``RequestValidator``, which does no I/O). No trio,
quart, sqlalchemy or structlog; nothing here logs.

Rules: the URL a signature covers is always built from configuration (the public origin Archer
put in its TwiML and webhook settings), never from the request's ``Host`` or ``X-Forwarded-*``
headers, which a proxy or tunnel rewrites. A missing or empty signature is simply invalid. The
auth token never appears in a repr, so a logged checker cannot leak it.

Reference: ../shared/reference/twilio-media-streams.md §4.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import attrs
from twilio.request_validator import RequestValidator

if TYPE_CHECKING:
    from collections.abc import Mapping


@attrs.frozen(slots=True)
class SignatureChecker:
    """Validates (and, for emulators and tests, computes) Twilio request signatures."""

    auth_token: str = attrs.field(repr=False)
    _validator: RequestValidator = attrs.field(init=False, repr=False, eq=False)

    @_validator.default
    def _make_validator(self) -> RequestValidator:
        return RequestValidator(self.auth_token)

    def valid_webhook(self, url: str, params: Mapping[str, str], signature: str | None) -> bool:
        """Whether ``signature`` signs a form-encoded webhook to ``url`` with ``params``.

        ``url`` is the full URL Twilio requested, query string included exactly as sent;
        ``params`` are all the form fields, unfiltered. The validator also accepts the URL
        with the default port added or removed, since Twilio's signing is inconsistent there.
        """
        if not signature:
            return False
        return bool(self._validator.validate(url, dict(params), signature))

    def valid_stream_upgrade(self, stream_url: str, signature: str | None) -> bool:
        """Whether ``signature`` signs the media-stream WebSocket upgrade to ``stream_url``.

        Twilio signs the ``wss://`` URL from the TwiML with no parameters (the upgrade is a GET
        without a body); ``stream_url`` carries the upgrade's query string, if it had one. Its
        security guide says to retry with a trailing ``/`` when that fails, so both forms are
        accepted.
        """
        if not signature:
            return False
        # The query string, if any, is part of what was signed (issue 19: appending one to a
        # signed URL must not pass); the trailing slash goes on the path, before it.
        path, sep, query = stream_url.partition("?")
        with_slash = path.rstrip("/") + "/" + sep + query
        return any(
            bool(self._validator.validate(url, {}, signature)) for url in (stream_url, with_slash)
        )

    def sign(self, url: str, params: Mapping[str, str]) -> str:
        """The signature Twilio would send for a request to ``url`` with ``params``."""
        return str(self._validator.compute_signature(url, dict(params)))


def webhook_url(base_url: str, path: str) -> str:
    """The public URL Twilio requested: the configured origin followed by ``path``.

    ``base_url`` is a bare origin such as ``https://archer.example.com`` (a trailing ``/`` is
    tolerated); ``path`` is the request path and query exactly as received, starting with ``/``.

    Raises:
        ValueError: ``base_url`` is not an http(s) origin, or ``path`` does not start with ``/``.
    """
    parts = urlsplit(base_url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ValueError(f"webhook base URL {base_url!r} is not an http(s) origin")
    if parts.path not in ("", "/") or parts.query or parts.fragment or "?" in base_url:
        raise ValueError(f"webhook base URL {base_url!r} must be a bare origin")
    if not path.startswith("/"):
        raise ValueError(f"request path {path[:40]!r} does not start with '/'")
    return base_url.rstrip("/") + path
