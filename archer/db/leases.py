"""SQL about instance leases, shared by the call store and the reaper.

Layer: database adapter (SQLAlchemy expressions only; pure: no I/O, no trio, no logging).

Rules: an instance is alive while its ``instances.renewed_at`` is within the lease of the
database's ``now()`` (``archer.db.clock``); never a host's clock. See ``archer.db.instances``.
"""

from __future__ import annotations

import sqlalchemy as sa

from archer.db.clock import db_now
from archer.db.tables import calls, instances

__all__ = ["carrier_alive", "carrier_lease"]


def carrier_alive(lease_seconds: float) -> sa.ColumnElement[bool]:
    """SQL: the instance named by ``calls.instance_id`` holds a lease renewed within the lease."""
    return sa.exists().where(
        instances.c.id == calls.c.instance_id,
        instances.c.renewed_at > db_now(-lease_seconds),
    )


def carrier_lease() -> sa.ScalarSelect[object]:
    """SQL: the last renewal of the lease of the instance named by ``calls.instance_id``."""
    return (
        sa.select(instances.c.renewed_at)
        .where(instances.c.id == calls.c.instance_id)
        .scalar_subquery()
    )
