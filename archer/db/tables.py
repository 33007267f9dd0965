"""SQLAlchemy Core tables mirroring ``schema.sql``.

Layer: database adapter (SQLAlchemy only; no trio, no logging).

Rules: ``schema.sql`` is canonical and this module follows it column for column: same names,
types, nullability, defaults, keys and constraint names (``tests/db/test_schema.py`` reflects
the applied SQL and compares). The same tables run on the embedded SQLite default, so checks use
only functions both databases have, ids become SQLite's rowid there, and ``UtcDateTime`` makes
every timestamp a timezone-aware UTC ``datetime`` in Python whichever database stored it.

Size (over 400 lines, on purpose): one table per block, in schema.sql's order, so the two files
are read side by side; splitting the tables would split the one mirror the schema test checks.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final, get_args

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB

from archer.call.outbound import PURPOSES
from archer.call.records import CallStatus

if TYPE_CHECKING:
    from sqlalchemy.engine import Dialect

__all__ = [
    "CALL_STATUSES",
    "OUTBOUND_PURPOSES",
    "OUTBOUND_STATUSES",
    "UtcDateTime",
    "accounts",
    "api_keys",
    "call_recordings",
    "call_turns",
    "calls",
    "cards",
    "customers",
    "instances",
    "metadata",
    "outbound_attempts",
    "outbound_pacing",
    "outbound_requests",
    "pin_failures",
    "pin_lockouts",
    "recording_events",
    "tool_calls",
    "transaction_reviews",
    "transactions",
]

#: The values the ``calls.status`` check allows, in schema.sql's order.
CALL_STATUSES: Final[tuple[str, ...]] = get_args(CallStatus)


class UtcDateTime(sa.TypeDecorator[datetime]):
    """``timestamptz`` on PostgreSQL, naive-UTC text on SQLite; aware UTC in Python on both.

    Naive datetimes are refused on the way in: a naive value is a bug (local time or UTC?), and
    storing it would silently shift it by the server's offset.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.utcoffset() is None:
            raise ValueError(f"naive datetime {value!r}: Archer stores only timezone-aware UTC")
        utc = value.astimezone(UTC)
        # SQLite has no time zones; SQLAlchemy would format the wall clock and drop the offset.
        return utc.replace(tzinfo=None) if dialect.name == "sqlite" else utc

    def process_result_value(self, value: Any | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if not isinstance(value, datetime):
            raise TypeError(f"expected a datetime from the database, got {value!r}")
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        # psycopg answers in the session's time zone; normalise so equality is unsurprising.
        return value.astimezone(UTC)


#: Constraint names as PostgreSQL picks them by default for the inline syntax in schema.sql.
NAMING_CONVENTION: Final = {
    "pk": "%(table_name)s_pkey",
    "uq": "%(table_name)s_%(column_0_N_name)s_key",
    "fk": "%(table_name)s_%(column_0_N_name)s_fkey",
    "ck": "%(table_name)s_%(constraint_name)s_check",
}

metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)

# bigint identity on PostgreSQL; on SQLite only "INTEGER PRIMARY KEY" aliases the rowid and
# autoincrements, so the variant spells it that way there.
_Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_Json = sa.JSON().with_variant(JSONB(), "postgresql")


def _id() -> sa.Column[int]:
    return sa.Column("id", _Id, sa.Identity(), primary_key=True)


def _check(name: str, sql: str) -> sa.CheckConstraint:
    """A check named ``<table>_<name>_check``, as PostgreSQL names an inline column check."""
    return sa.CheckConstraint(sql, name=name)


customers = sa.Table(
    "customers",
    metadata,
    _id(),
    sa.Column("phone_e164", sa.Text, nullable=False, unique=True),
    sa.Column("full_name", sa.Text),
    # pbkdf2_sha256$<iterations>$<salt hex>$<hash hex>; NULL for callers created on first call.
    sa.Column("pin_hash", sa.Text),
    sa.Column("created_at", UtcDateTime, nullable=False, server_default=sa.func.now()),
)

accounts = sa.Table(
    "accounts",
    metadata,
    _id(),
    sa.Column("customer_id", sa.BigInteger, sa.ForeignKey("customers.id"), nullable=False),
    sa.Column("kind", sa.Text, nullable=False),
    sa.Column("last4", sa.Text, nullable=False),
    sa.Column("balance_cents", sa.BigInteger, nullable=False, server_default=sa.text("0")),
    sa.Column("currency", sa.Text, nullable=False, server_default=sa.text("'USD'")),
    sa.Column("status", sa.Text, nullable=False, server_default=sa.text("'open'")),
    _check("kind", "kind IN ('checking', 'savings', 'credit')"),
    _check("last4", "length(last4) = 4"),
    _check("currency", "length(currency) = 3 AND currency = upper(currency)"),
    _check("status", "status IN ('open', 'frozen', 'closed')"),
    sa.UniqueConstraint("customer_id", "last4"),
)

cards = sa.Table(
    "cards",
    metadata,
    _id(),
    sa.Column("customer_id", sa.BigInteger, sa.ForeignKey("customers.id"), nullable=False),
    sa.Column("account_id", sa.BigInteger, sa.ForeignKey("accounts.id"), nullable=False),
    sa.Column("last4", sa.Text, nullable=False),
    sa.Column("status", sa.Text, nullable=False, server_default=sa.text("'active'")),
    sa.Column("updated_at", UtcDateTime, nullable=False, server_default=sa.func.now()),
    _check("last4", "length(last4) = 4"),
    _check("status", "status IN ('active', 'frozen', 'lost')"),
    sa.UniqueConstraint("customer_id", "last4"),
    sa.Index("cards_account_id_idx", "account_id"),
)

transactions = sa.Table(
    "transactions",
    metadata,
    _id(),
    sa.Column("account_id", sa.BigInteger, sa.ForeignKey("accounts.id"), nullable=False),
    sa.Column("posted_at", UtcDateTime, nullable=False),
    # Signed: negative is money leaving the account.
    sa.Column("amount_cents", sa.BigInteger, nullable=False),
    sa.Column("description", sa.Text, nullable=False),
    # The card that made the payment; NULL for transfers and deposits (schema.sql's ALTER).
    sa.Column("card_id", sa.BigInteger, sa.ForeignKey("cards.id")),
)
# Newest first per account: the order the "recent transactions" tool reads.
sa.Index(
    "transactions_account_id_posted_at_idx",
    transactions.c.account_id,
    transactions.c.posted_at.desc(),
)

calls = sa.Table(
    "calls",
    metadata,
    _id(),
    sa.Column("call_sid", sa.Text, nullable=False, unique=True),
    sa.Column("stream_sid", sa.Text),
    sa.Column("customer_id", sa.BigInteger, sa.ForeignKey("customers.id", ondelete="SET NULL")),
    sa.Column("from_number", sa.Text),
    sa.Column("to_number", sa.Text),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("end_reason", sa.Text),
    sa.Column("agent_call_id", sa.Text),
    sa.Column("started_at", UtcDateTime, nullable=False),
    sa.Column("connected_at", UtcDateTime),
    sa.Column("ended_at", UtcDateTime),
    sa.Column("duration_ms", sa.BigInteger),
    # Written only by the status callback, never by the call's own flush.
    sa.Column("twilio_status", sa.Text),
    sa.Column("twilio_duration_s", sa.Integer),
    sa.Column("frames_in", sa.BigInteger, nullable=False, server_default=sa.text("0")),
    sa.Column("frames_out", sa.BigInteger, nullable=False, server_default=sa.text("0")),
    sa.Column("frames_dropped", sa.BigInteger, nullable=False, server_default=sa.text("0")),
    sa.Column("error", sa.Text),
    # SHA-256 hex of the one-time stream token; NULL once the stream has spent it.
    sa.Column("stream_token_hash", sa.Text),
    sa.Column("stream_token_expires_at", UtcDateTime),
    # Custom events the agent sent, in order (a JSON array of objects).
    sa.Column("agent_events", _Json, nullable=False, server_default=sa.text("'[]'")),
    # The instance carrying the stream (instances.id); no foreign key, see schema.sql.
    sa.Column("instance_id", sa.Text),
    # Agent sessions opened after a failure, and every session's call id in order (issue 16).
    sa.Column("agent_reconnects", sa.Integer, nullable=False, server_default=sa.text("0")),
    sa.Column("agent_call_ids", _Json, nullable=False, server_default=sa.text("'[]'")),
    # Keys withheld from the agent (issue 21): frames silenced in captures and for tones.
    sa.Column("frames_silenced_for_pin", sa.Integer, nullable=False, server_default=sa.text("0")),
    sa.Column("frames_silenced_for_tones", sa.Integer, nullable=False, server_default=sa.text("0")),
    sa.Column("dtmf_dropped", sa.Integer, nullable=False, server_default=sa.text("0")),
    _check("status", "status IN (" + ", ".join(f"'{s}'" for s in CALL_STATUSES) + ")"),
    sa.Index("calls_customer_id_idx", "customer_id"),
    sa.Index("calls_started_at_idx", "started_at"),
)

call_turns = sa.Table(
    "call_turns",
    metadata,
    _id(),
    sa.Column(
        "call_id", sa.BigInteger, sa.ForeignKey("calls.id", ondelete="CASCADE"), nullable=False
    ),
    sa.Column("turn", sa.Integer, nullable=False),
    sa.Column("role", sa.Text, nullable=False),
    sa.Column("text", sa.Text, nullable=False),
    sa.Column("interrupted", sa.Boolean, nullable=False, server_default=sa.false()),
    # Seconds since the agent session began.
    sa.Column("start_time", sa.Double),
    sa.Column("end_time", sa.Double),
    sa.Column("heard_ms", sa.Integer),
    sa.UniqueConstraint("call_id", "turn"),
)

tool_calls = sa.Table(
    "tool_calls",
    metadata,
    _id(),
    sa.Column(
        "call_id", sa.BigInteger, sa.ForeignKey("calls.id", ondelete="CASCADE"), nullable=False
    ),
    sa.Column("tool_call_id", sa.Text, nullable=False),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("arguments", _Json, nullable=False),
    sa.Column("result", sa.Text),
    sa.Column("is_error", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("started_at", UtcDateTime, nullable=False),
    sa.Column("finished_at", UtcDateTime),
    sa.Column("outcome", sa.Text),
    sa.UniqueConstraint("call_id", "tool_call_id"),
)

# --- PIN lock-out (issue 19) -----------------------------------------------------------------

pin_failures = sa.Table(
    "pin_failures",
    metadata,
    _id(),
    sa.Column(
        "customer_id",
        sa.BigInteger,
        sa.ForeignKey("customers.id", ondelete="CASCADE"),
        nullable=False,
    ),
    sa.Column("call_sid", sa.Text, nullable=False),
    sa.Column("failed_at", UtcDateTime, nullable=False, server_default=sa.func.now()),
    sa.Index("pin_failures_customer_id_failed_at_idx", "customer_id", "failed_at"),
)

pin_lockouts = sa.Table(
    "pin_lockouts",
    metadata,
    _id(),
    sa.Column(
        "customer_id",
        sa.BigInteger,
        sa.ForeignKey("customers.id", ondelete="CASCADE"),
        nullable=False,
    ),
    sa.Column("call_sid", sa.Text, nullable=False),
    sa.Column("failures", sa.Integer, nullable=False),
    sa.Column("locked_at", UtcDateTime, nullable=False, server_default=sa.func.now()),
    sa.Column("locked_until", UtcDateTime, nullable=False),
    sa.Index("pin_lockouts_customer_id_locked_until_idx", "customer_id", "locked_until"),
)

instances = sa.Table(
    "instances",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("started_at", UtcDateTime, nullable=False),
    sa.Column("renewed_at", UtcDateTime, nullable=False),
)

# --- Outbound calls (issue 22) ---------------------------------------------------------------

#: Why Archer may ring a customer (``outbound_requests.purpose``), in schema.sql's order.
OUTBOUND_PURPOSES: Final[tuple[str, ...]] = PURPOSES
#: ``outbound_requests.status``, in schema.sql's order.
OUTBOUND_STATUSES: Final[tuple[str, ...]] = (
    "queued",
    "dialing",
    "in_progress",
    "completed",
    "failed",
)


def _one_of(column: str, values: tuple[str, ...]) -> sa.CheckConstraint:
    return _check(column, f"{column} IN (" + ", ".join(f"'{v}'" for v in values) + ")")


api_keys = sa.Table(
    "api_keys",
    metadata,
    _id(),
    sa.Column("name", sa.Text, nullable=False, unique=True),
    # SHA-256 hex of the key; the key itself is never stored.
    sa.Column("key_hash", sa.Text, nullable=False, unique=True),
    sa.Column("created_at", UtcDateTime, nullable=False, server_default=sa.func.now()),
    sa.Column("revoked_at", UtcDateTime),
)

outbound_requests = sa.Table(
    "outbound_requests",
    metadata,
    _id(),
    sa.Column("api_key_id", sa.BigInteger, sa.ForeignKey("api_keys.id")),
    sa.Column("idempotency_key", sa.Text),
    sa.Column("to_number", sa.Text, nullable=False),
    sa.Column("purpose", sa.Text, nullable=False),
    sa.Column("transaction_id", sa.BigInteger, sa.ForeignKey("transactions.id"), nullable=False),
    sa.Column("status", sa.Text, nullable=False, server_default=sa.text("'queued'")),
    sa.Column("attempts", sa.Integer, nullable=False, server_default=sa.text("0")),
    sa.Column("not_before", UtcDateTime, nullable=False, server_default=sa.func.now()),
    sa.Column("claimed_by", sa.Text),
    sa.Column("answered_by", sa.Text),
    sa.Column("end_reason", sa.Text),
    sa.Column("call_id", sa.BigInteger, sa.ForeignKey("calls.id", ondelete="SET NULL")),
    sa.Column("created_at", UtcDateTime, nullable=False, server_default=sa.func.now()),
    sa.Column("updated_at", UtcDateTime, nullable=False, server_default=sa.func.now()),
    _one_of("purpose", OUTBOUND_PURPOSES),
    _one_of("status", OUTBOUND_STATUSES),
    sa.UniqueConstraint("api_key_id", "idempotency_key"),
    sa.Index("outbound_requests_status_not_before_idx", "status", "not_before"),
)

outbound_attempts = sa.Table(
    "outbound_attempts",
    metadata,
    _id(),
    sa.Column(
        "request_id",
        sa.BigInteger,
        sa.ForeignKey("outbound_requests.id", ondelete="CASCADE"),
        nullable=False,
    ),
    sa.Column("attempt", sa.Integer, nullable=False),
    sa.Column("call_sid", sa.Text),
    sa.Column("outcome", sa.Text),
    sa.Column("instance_id", sa.Text, nullable=False),
    sa.Column("started_at", UtcDateTime, nullable=False, server_default=sa.func.now()),
    sa.Column("ended_at", UtcDateTime),
    sa.UniqueConstraint("request_id", "attempt"),
    # A media stream finds what its outbound call is about by CallSid (archer.db.call_facts).
    sa.Index("outbound_attempts_call_sid_idx", "call_sid"),
)

# One row (id = 1): when the next Calls API request may go, across every instance.
outbound_pacing = sa.Table(
    "outbound_pacing",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("next_send_at", UtcDateTime, nullable=False),
    _check("id", "id = 1"),
)

transaction_reviews = sa.Table(
    "transaction_reviews",
    metadata,
    _id(),
    sa.Column(
        "transaction_id",
        sa.BigInteger,
        sa.ForeignKey("transactions.id"),
        nullable=False,
        unique=True,
    ),
    sa.Column("customer_id", sa.BigInteger, sa.ForeignKey("customers.id"), nullable=False),
    sa.Column("call_sid", sa.Text, nullable=False),
    sa.Column("recognised", sa.Boolean, nullable=False),
    sa.Column("cards_frozen", sa.Text, nullable=False, server_default=sa.text("''")),
    sa.Column("reviewed_at", UtcDateTime, nullable=False, server_default=sa.func.now()),
    # What a dispute froze: the paying card, the account's cards (no card_id), or nothing.
    sa.Column("freeze_scope", sa.Text, nullable=False, server_default=sa.text("'none'")),
    _check("freeze_scope", "freeze_scope IN ('card', 'account', 'none')"),
)

call_recordings = sa.Table(
    "call_recordings",
    metadata,
    _id(),
    sa.Column(
        "call_id", sa.BigInteger, sa.ForeignKey("calls.id", ondelete="CASCADE"), nullable=False
    ),
    sa.Column("recording_sid", sa.Text, nullable=False, unique=True),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("channels", sa.Integer),
    sa.Column("duration_s", sa.Integer),
    sa.Column("url", sa.Text),
    sa.Column("error_code", sa.Integer),
    sa.Column("updated_at", UtcDateTime, nullable=False, server_default=sa.func.now()),
    sa.Index("call_recordings_call_id_idx", "call_id"),
)

recording_events = sa.Table(
    "recording_events",
    metadata,
    _id(),
    sa.Column(
        "call_id", sa.BigInteger, sa.ForeignKey("calls.id", ondelete="CASCADE"), nullable=False
    ),
    sa.Column("seq", sa.Integer, nullable=False),
    sa.Column("action", sa.Text, nullable=False),
    sa.Column("requested_at", UtcDateTime, nullable=False),
    sa.Column("answered_at", UtcDateTime, nullable=False),
    sa.Column("accepted", sa.Boolean, nullable=False),
    sa.Column("error_code", sa.Integer),
    sa.Column("recording_sid", sa.Text),
    _check("action", "action IN ('pause', 'resume')"),
    sa.UniqueConstraint("call_id", "seq"),
)
