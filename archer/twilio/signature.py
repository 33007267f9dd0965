"""``X-Twilio-Signature`` checks for webhooks and for the media-stream WebSocket upgrade.

Layer: pure protocol (it wraps twilio's ``RequestValidator``, which does no I/O). No trio,
quart, sqlalchemy or structlog; nothing here logs.

Rules: the URL a signature covers is always built from configuration (the public origin Archer
put in its TwiML and webhook settings), never from the request's ``Host`` or ``X-Forwarded-*``
headers, which a proxy or tunnel rewrites. A missing or empty signature is simply invalid. No
secret appears in a repr, so a logged checker cannot leak one.

Two kinds of signature (twilio-python ≥ 9.13 understands both):
- the account's auth token, HMAC-SHA1: requests without ``X-Twilio-Webhooks-Signature-Settings``;
- a SharedKey: the header names the key (``key=<id>``) and the algorithm
  (``algorithm=HMAC_SHA256``). The secret is looked up by that id, so during a rotation the old
  and the new key both verify; a key id Archer does not know, or a header without one, is
  invalid (never the auth token's check instead, which would let a forger pick the weaker path).

Reference: ../shared/reference/twilio-media-streams.md §4.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import attrs
from twilio.request_validator import RequestValidator, get_signature_algorithm

if TYPE_CHECKING:
    from collections.abc import Mapping

#: The header with which Twilio says a request was signed with a SharedKey, and how.
SIGNATURE_SETTINGS_HEADER = "X-Twilio-Webhooks-Signature-Settings"


def _validators(shared_keys: Mapping[str, str]) -> dict[str, RequestValidator]:
    return {key_id: RequestValidator(secret) for key_id, secret in shared_keys.items()}


@attrs.frozen(slots=True)
class SignatureChecker:
    """Validates (and, for emulators and tests, computes) Twilio request signatures.

    ``shared_keys`` maps SharedKey ids to their secrets (``TWILIO_SHARED_KEYS``).
    """

    auth_token: str = attrs.field(repr=False)
    shared_keys: Mapping[str, str] = attrs.field(factory=dict, repr=False)
    _validator: RequestValidator = attrs.field(init=False, repr=False, eq=False)
    _shared: dict[str, RequestValidator] = attrs.field(init=False, repr=False, eq=False)

    @_validator.default
    def _make_validator(self) -> RequestValidator:
        return RequestValidator(self.auth_token)

    @_shared.default
    def _make_shared(self) -> dict[str, RequestValidator]:
        return _validators(self.shared_keys)

    def valid_webhook(
        self,
        url: str,
        params: Mapping[str, str],
        signature: str | None,
        settings_header: str | None = None,
    ) -> bool:
        """Whether ``signature`` signs a form-encoded webhook to ``url`` with ``params``.

        ``url`` is the full URL Twilio requested, query string included exactly as sent;
        ``params`` are all the form fields, unfiltered; ``settings_header`` is the request's
        ``X-Twilio-Webhooks-Signature-Settings`` (None: signed with the auth token). The
        validator also accepts the URL with the default port added or removed, since Twilio's
        signing is inconsistent there.
        """
        return self._valid(url, dict(params), signature, settings_header)

    def valid_stream_upgrade(
        self, stream_url: str, signature: str | None, settings_header: str | None = None
    ) -> bool:
        """Whether ``signature`` signs the media-stream WebSocket upgrade to ``stream_url``.

        Twilio signs the ``wss://`` URL from the TwiML with no parameters (the upgrade is a GET
        without a body); ``stream_url`` carries the upgrade's query string, if it had one. Its
        security guide says to retry with a trailing ``/`` when that fails, so both forms are
        accepted.
        """
        # The query string, if any, is part of what was signed (issue 19: appending one to a
        # signed URL must not pass); the trailing slash goes on the path, before it.
        path, sep, query = stream_url.partition("?")
        with_slash = path.rstrip("/") + "/" + sep + query
        return any(
            self._valid(url, {}, signature, settings_header) for url in (stream_url, with_slash)
        )

    def sign(self, url: str, params: Mapping[str, str]) -> str:
        """The signature Twilio would send with the auth token for ``url`` with ``params``."""
        return str(self._validator.compute_signature(url, dict(params)))

    def _valid(
        self,
        url: str,
        params: dict[str, str],
        signature: str | None,
        settings_header: str | None,
    ) -> bool:
        if not signature:
            return False
        if not settings_header:
            return bool(self._validator.validate(url, params, signature))
        validator = self._shared.get(shared_key_id(settings_header))
        if validator is None:
            return False
        algorithm = get_signature_algorithm(settings_header)
        return bool(validator.validate(url, params, signature, algorithm))


def shared_key_id(settings_header: str) -> str:
    """The SharedKey id that ``X-Twilio-Webhooks-Signature-Settings`` names (``""``: none)."""
    for part in settings_header.split(","):
        name, separator, value = part.partition("=")
        if separator and name.strip() == "key":
            return value.strip()
    return ""


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
