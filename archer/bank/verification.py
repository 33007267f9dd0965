"""Checking a caller's PIN: the one mechanism every way of giving a PIN goes through.

Layer: domain (bank). ``PinVerifier.check`` is what ``verify_caller`` calls today and what a
keypad ``collect_pin`` tool will call tomorrow; it reaches the database only through the
``BankStore`` port.

Rules:
- A customer locked out (``PIN_MAX_FAILURES`` failures within ``PIN_LOCKOUT_SECONDS``, counted
  in the database across calls and instances) is refused before the PIN is even looked at, so
  a locked account cannot be used as an oracle, not even with the right PIN.
- Every failure of a known customer is recorded (a ``pin_failures`` row) and the one that locks
  writes a ``pin_lockouts`` row; the database's clock decides the window.
- The PIN is compared in a worker thread (PBKDF2 is slow on purpose) against the customer's
  hash, or against a decoy when there is none, so "no PIN" costs as long as a wrong one. The PIN
  itself is never stored, logged or returned.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

import attrs
import structlog
import trio

from archer.bank.pins import hash_pin, verify_pin
from archer.bank.ports import DEFAULT_PIN_POLICY

if TYPE_CHECKING:
    from archer.bank.ports import BankStore, PinPolicy

__all__ = ["PinCheck", "PinVerifier"]

log = structlog.get_logger(__name__)

#: Compared against when a customer has no PIN, so "no PIN" costs as long as a wrong PIN.
_DECOY_PIN_HASH: Final = hash_pin("decoy", salt=b"archer-decoy-salt")


@attrs.frozen(slots=True)
class PinCheck:
    """The outcome of one PIN check."""

    verified: bool
    #: Verification is locked out for this customer (now, or by this very failure).
    locked_out: bool = False
    #: Failures the customer may still make before the lock-out (None: not counted, no customer).
    attempts_left: int | None = None


@attrs.frozen
class PinVerifier:
    """Checks PINs for the bank's customers under the lock-out ``policy``."""

    bank: BankStore
    policy: PinPolicy = DEFAULT_PIN_POLICY

    async def check(self, customer_id: int | None, call_sid: str, pin: str) -> PinCheck:
        """Check ``pin`` for ``customer_id`` (None: the caller is no customer; never verified).

        Raises:
            StoreError: the database is unavailable (a failure may then go uncounted, but
                nothing was verified).

        Cancellation: a failure being recorded commits or not as a whole (its thread is never
        abandoned); nothing is verified.
        """
        if customer_id is not None and (await self.bank.pin_lock(customer_id)).locked:
            log.warning("bank.pin_refused_locked_out", customer_id=customer_id)
            return PinCheck(verified=False, locked_out=True, attempts_left=0)
        stored = None if customer_id is None else await self.bank.pin_hash(customer_id)
        # PBKDF2 takes a tenth of a second: in a worker thread, never on the trio thread.
        matched = await trio.to_thread.run_sync(
            verify_pin, pin, stored if stored is not None else _DECOY_PIN_HASH
        )
        if matched and stored is not None:
            return PinCheck(verified=True)
        if customer_id is None:
            return PinCheck(verified=False)
        state = await self.bank.record_pin_failure(customer_id, call_sid, self.policy)
        if state.newly_locked:
            log.warning(
                "bank.pin_locked_out",
                customer_id=customer_id,
                failures=state.failures,
                locked_until=None if state.locked_until is None else state.locked_until.isoformat(),
            )
        return PinCheck(
            verified=False,
            locked_out=state.locked,
            attempts_left=max(0, self.policy.max_failures - state.failures),
        )
