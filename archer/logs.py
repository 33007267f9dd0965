"""Structured logging: structlog configured once, JSON lines or a console view.

Layer: infrastructure; no I/O at import time.

Rules: ``merge_contextvars`` runs first, so ``call_sid``/``stream_sid`` bound by the media route
before the per-call nursery opens appear on every line the call produces, in child tasks and in
DB worker threads alike (trio copies the context into both). Only the sync log methods work under
trio (``ainfo`` and friends are asyncio-only). Standard-library loggers (hypercorn, SQLAlchemy)
are routed through the same renderer so one process writes one format.
"""

from __future__ import annotations

import logging
import re
import sys
from typing import Final, TextIO

import attrs
import structlog
from structlog.typing import EventDict, Processor

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


#: Keys whose values never reach a log line, whatever they hold.
SECRET_KEYS: Final = frozenset(
    {
        "pin",
        "password",
        "passcode",
        "secret",
        "token",
        "auth_token",
        "api_key",
        "authorization",
        "x-api-key",
        "x-twilio-signature",
        "account_number",
        "card_number",
    }
)
_MASK: Final = "***"
#: E.164 numbers ("+" and 7 to 15 digits); digit runs inside ids (CallSids are hex) stay.
_PHONE: Final = re.compile(r"(?<![\w+])\+\d{7,15}(?!\d)")


@attrs.frozen
class Redactor:
    """A structlog processor that keeps secrets out of every line (the last line of defence).

    Values under ``SECRET_KEYS`` are masked; any known secret (the Twilio auth token, the
    Cartesia API key) is cut out of every string; anything shaped like a phone number keeps only
    its last four digits. Secrets are masked at their source too; this catches what slips.
    """

    secrets: tuple[str, ...] = ()

    def __call__(self, logger: object, method: str, event: EventDict) -> EventDict:
        return {key: self._clean(key, value) for key, value in event.items()}

    def _clean(self, key: str, value: object) -> object:
        if key.lower() in SECRET_KEYS and value not in (None, ""):
            return _MASK
        if isinstance(value, str):
            return self._scrub(value)
        if isinstance(value, dict):
            return {k: self._clean(str(k), v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self._clean(key, item) for item in value]
        return value

    def _scrub(self, text: str) -> str:
        for secret in self.secrets:
            if secret and secret in text:
                text = text.replace(secret, _MASK)
        return _PHONE.sub(lambda match: mask_phone(match.group()), text)


def configure_logging(
    level: str = "info",
    fmt: str = "json",
    *,
    stream: TextIO | None = None,
    cache: bool = True,
    secrets: tuple[str, ...] = (),
) -> None:
    """Configure structlog and the standard ``logging`` root for this process.

    Args:
        level: ``debug``, ``info``, ``warning`` or ``error``.
        fmt: ``json`` (one object a line, for machines) or ``console`` (for people).
        stream: where lines go (standard error by default).
        cache: cache loggers on first use; tests turn it off so they can reconfigure.
        secrets: values cut out of every line (the Twilio auth token, the Cartesia API key).
    """
    numeric_level = _LEVELS[level]
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    redact = Redactor(tuple(secret for secret in secrets if len(secret) >= 8))
    renderer: Processor = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    output = stream if stream is not None else sys.stderr
    structlog.configure(
        processors=[
            *shared,
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            redact,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric_level),
        logger_factory=structlog.WriteLoggerFactory(file=output),
        cache_logger_on_first_use=cache,
    )
    # Third-party libraries log through the standard library; render them the same way.
    handler = logging.StreamHandler(output)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                redact,
                renderer,
            ],
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(numeric_level)
    # hypercorn's access log is one line per webhook; keep it, but never per media frame.
    logging.getLogger("hypercorn.access").setLevel(max(numeric_level, logging.INFO))


def mask_phone(number: str | None) -> str:
    """A phone number as it may appear in logs: only its last four digits."""
    if not number:
        return ""
    digits = [c for c in number if c.isdigit()]
    if len(digits) <= 4:
        return "***"
    return "***" + "".join(digits[-4:])
