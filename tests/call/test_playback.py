"""``Playback`` on its own: several tools waiting for their lead-ins at once.

Each waiter places its own mark and has its own wake-up, so two tools waiting together both get
their mark's echo and both notice more speech arriving. Autojump clock, no sockets.
"""

from __future__ import annotations

from functools import partial

import trio
import trio.testing

from archer.call.playback import SETTLE_SECONDS, PlaceMark, Playback


class Marks:
    """Stands in for the downlink: records each mark a waiter places, and when."""

    def __init__(self) -> None:
        self.placed: list[tuple[str, str, float]] = []  # (waiter, mark name, time)

    def placer(self, waiter: str) -> PlaceMark:
        async def place_mark(name: str, epoch: int) -> None:
            self.placed.append((waiter, name, trio.current_time()))

        return place_mark

    def of(self, waiter: str) -> list[str]:
        return [name for who, name, _ in self.placed if who == waiter]


async def test_two_tools_waiting_at_once_both_get_their_mark(
    autojump_clock: trio.abc.Clock,
) -> None:
    playback = Playback()
    playback.audio_queued(200)
    marks = Marks()
    heard: dict[str, tuple[bool, float]] = {}

    async def tool(waiter: str) -> None:
        result = await playback.wait_until_heard(marks.placer(waiter), since_epoch=0)
        heard[waiter] = (result, trio.current_time())

    start = trio.current_time()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(tool, "a")
        nursery.start_soon(tool, "b")
        await trio.testing.wait_all_tasks_blocked()
        [mark_a], [mark_b] = marks.of("a"), marks.of("b")
        assert mark_a != mark_b  # each waiter has a mark of its own
        playback.mark_echoed(mark_b)
        playback.mark_echoed(mark_a)
    assert heard["a"][0] is True
    assert heard["b"][0] is True
    # Both settled after the echo plus the settling pause, neither later.
    assert heard["a"][1] - start == SETTLE_SECONDS
    assert heard["b"][1] - start == SETTLE_SECONDS


async def test_more_speech_wakes_every_settling_tool_at_once(
    autojump_clock: trio.abc.Clock,
) -> None:
    """Audio queued while two tools settle wakes both at once (one wake-up used to be shared,
    so the first waiter slept out its whole pause while the second moved on)."""
    playback = Playback()
    playback.audio_queued(200)
    marks = Marks()
    results: dict[str, bool] = {}

    async def tool(waiter: str) -> None:
        results[waiter] = await playback.wait_until_heard(marks.placer(waiter), since_epoch=0)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(tool, "a")
        nursery.start_soon(tool, "b")
        await trio.testing.wait_all_tasks_blocked()
        for name in marks.of("a") + marks.of("b"):
            playback.mark_echoed(name)
        await trio.testing.wait_all_tasks_blocked()  # both are settling now
        await trio.sleep(SETTLE_SECONDS / 4)
        more_at = trio.current_time()
        playback.audio_queued(100)  # the agent is still finishing the sentence
        await trio.testing.wait_all_tasks_blocked()
        # Each tool noticed at once and placed a second mark behind the new audio.
        for waiter in ("a", "b"):
            [_, (_, second, placed_at)] = [m for m in marks.placed if m[0] == waiter]
            assert placed_at == more_at
            playback.mark_echoed(second)
    assert results == {"a": True, "b": True}


async def test_a_clear_answers_every_waiting_tool_not_heard(
    autojump_clock: trio.abc.Clock,
) -> None:
    playback = Playback()
    playback.audio_queued(200)
    marks = Marks()
    results: dict[str, bool] = {}

    async def tool(waiter: str) -> None:
        results[waiter] = await playback.wait_until_heard(marks.placer(waiter), since_epoch=0)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(tool, "a")
        nursery.start_soon(tool, "b")
        await trio.testing.wait_all_tasks_blocked()
        playback.interrupt()
    assert results == {"a": False, "b": False}


async def test_a_cancelled_waiter_leaves_no_wake_up_behind(
    autojump_clock: trio.abc.Clock,
) -> None:
    playback = Playback()
    playback.audio_queued(200)
    marks = Marks()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(partial(playback.wait_until_heard, marks.placer("a"), since_epoch=0))
        await trio.testing.wait_all_tasks_blocked()
        [name] = marks.of("a")
        playback.mark_echoed(name)
        await trio.testing.wait_all_tasks_blocked()  # settling
        assert len(playback._arrival_waiters) == 1
        nursery.cancel_scope.cancel()
    assert playback._arrival_waiters == set()
