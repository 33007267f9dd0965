"""Archer's exception hierarchy.

Layer: shared by every layer; imports nothing but the standard library.

Rules: adapters map library exceptions (trio-websocket, psycopg, SQLAlchemy, twilio) to these
types at the boundary, so nothing above an adapter ever sees a third-party exception. Pure
protocol modules raise the ``*ProtocolError`` types for bad input from a peer. A caller hanging
up is not an exception anywhere.
"""

from __future__ import annotations


class ArcherError(Exception):
    """Base class of every error Archer raises on purpose."""


class ConfigError(ArcherError):
    """A setting is missing or malformed; the message names the variable."""


class SettingsError(ConfigError):
    """One or more settings are missing or malformed: ``problems`` has a line for each."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = tuple(problems)


class ProtocolError(ArcherError):
    """A peer sent something that breaks its protocol."""


class TwilioProtocolError(ProtocolError):
    """A Twilio media-stream frame or webhook could not be understood."""


class CartesiaProtocolError(ProtocolError):
    """A Cartesia agent event could not be understood."""


class UpstreamError(ArcherError):
    """A dependency failed or went away."""


class AgentUnavailableError(UpstreamError):
    """The agent could not be reached, refused the connection or never became ready."""

    def __init__(self, message: str, *, end_reason: str) -> None:
        super().__init__(message)
        #: The call record's ``end_reason`` for this failure (``agent_unreachable``,
        #: ``agent_handshake_timeout`` or ``agent_rejected``).
        self.end_reason = end_reason


class AgentClosedError(UpstreamError):
    """The agent closed its socket abnormally (any code but a clean 1000 hang-up)."""

    def __init__(self, code: int | None, reason: str | None) -> None:
        super().__init__(f"agent closed the connection: code={code} reason={reason or ''}")
        self.code = code
        self.reason = reason


class AgentIdleError(UpstreamError):
    """The agent closed the session for inactivity (Line's "connection idle timeout")."""


class AgentFatalError(UpstreamError):
    """The agent reported a fatal ``error`` event; it is about to close the socket."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"agent error {code}: {message}")
        self.code = code


class AgentUnresponsiveError(UpstreamError):
    """The agent stopped answering keepalive pings."""


class TelephonyError(UpstreamError):
    """Twilio's REST API refused a call update or could not be reached."""

    def __init__(self, message: str, *, code: int | None = None, status: int | None = None):
        super().__init__(message)
        #: Twilio's error code (e.g. 20404, 21220) and HTTP status, when Twilio answered.
        self.code = code
        self.status = status


class ToolError(ArcherError):
    """A tool refused or failed in a way the agent should hear about (its message is the result).

    ``outcome``, if given, names the refusal in the record (``tool_calls.outcome``).
    """

    def __init__(self, message: str, *, outcome: str | None = None):
        super().__init__(message)
        self.outcome = outcome


class StoreError(ArcherError):
    """The database refused or failed an operation (down, timed out, constraint broken)."""
