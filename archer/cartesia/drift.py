"""Protocol drift from an agent, logged once per call: unknown events and ignored fields.

Layer: adapter helper (structlog). Both Cartesia clients own one ``DriftLog`` per session.

Why: Cartesia adds events and fields without notice, and a peer may send a mistyped field Archer
only records. Such drift must neither end the call nor flood the log at 50 messages a second, so
each unknown event type and each ignored field path is logged once, at info, and then counted
silently.
"""

from __future__ import annotations

import attrs
import structlog

log = structlog.get_logger(__name__)

#: Distinct names remembered per call; a peer inventing names forever cannot grow memory.
MAX_REMEMBERED = 64


@attrs.define
class DriftLog:
    """What one agent session sent that Archer ignored."""

    #: The parsers append ignored field paths here (``parse_server_event(..., ignored=...)``).
    pending: list[str] = attrs.Factory(list)
    _seen: set[str] = attrs.Factory(set)

    def unknown_event(self, kind: str) -> None:
        self._once("agent.unknown_event", "event:" + kind[:64], type=kind[:64])

    def flush(self) -> None:
        """Log the field paths the last parse ignored (each once per session), then forget them."""
        for path in self.pending:
            self._once("agent.field_ignored", "field:" + path, field=path)
        self.pending.clear()

    def _once(self, message: str, key: str, **fields: str) -> None:
        if key in self._seen or len(self._seen) >= MAX_REMEMBERED:
            return
        self._seen.add(key)
        log.info(message, **fields)
