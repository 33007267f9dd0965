"""Draining: after SIGTERM the server finishes the calls it carries and takes no new ones.

Layer: web. One ``Drain`` per server, shared by the routes: ``/readyz`` answers 503 as soon as
draining starts (so the load balancer stops sending), the voice webhook answers new calls with
the polite apology, and the media route counts the calls still live so the server knows when
it may stop. Mutated only on the trio thread.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import attrs
import trio


@attrs.define
class Drain:
    """Whether the server is draining, and how many calls it still carries."""

    draining: bool = False
    live_calls: int = 0
    _idle: trio.Event = attrs.Factory(trio.Event)

    def start(self) -> None:
        """Stop taking calls; ``wait_idle`` returns once the live ones are over."""
        self.draining = True
        if self.live_calls == 0:
            self._idle.set()

    @contextmanager
    def call(self) -> Iterator[None]:
        """Count one live call for as long as the block runs."""
        self.live_calls += 1
        try:
            yield
        finally:
            self.live_calls -= 1
            if self.draining and self.live_calls == 0:
                self._idle.set()

    async def wait_idle(self) -> None:
        """Wait until draining started and no call is live.

        Cancellation: nothing to undo.
        """
        await self._idle.wait()
