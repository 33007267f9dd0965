"""The spool: call records (and Twilio status callbacks) the database did not take, on disk.

Layer: adapter (files). ``JsonlSpool`` satisfies the ``RecordSpool`` port of
``archer.call.ports``; blocking file work runs in worker threads.

Rules:

- One append-only JSON-lines journal per process: ``SPOOL_PATH``'s directory holds
  ``<stem>.<INSTANCE_ID><suffix>`` for each instance (``calls.pod-a.jsonl``), so a directory on a
  shared or persistent volume outlives any one container. Every append is flushed and fsynced
  before it returns, so an entry that left memory is on disk.
- Each process holds an exclusive ``fcntl.flock`` on its journal's ``.lock`` file for as long as
  it lives (``hold``); the kernel drops it when the process dies, however it dies.
- Every instance replays *every* journal in the directory: its own under its in-process lock
  (it holds the file lock already), and another's only if it can take that journal's lock
  without waiting (so only journals whose
  writer is gone, and only one replayer at a time). Replay saves each entry through the
  ``CallStore`` (idempotent upserts keyed by CallSid, so a repeat is harmless), then rewrites the
  journal with what is left, atomically (temporary file, fsync, rename); a journal emptied by
  replay is removed (with its lock file, if it was another's).
- Lines are typed: a call record (no ``kind``, as before) or ``{"kind": "twilio_status", ...}``
  (the line format, pure, lives in ``archer.db.spool_lines``). In each journal the call
  records are replayed first and the status callbacks after them, so a status lands after the
  call record it belongs to.
"""

from __future__ import annotations

import fcntl
import os
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import attrs
import structlog
import trio

from archer.call.records import CallRecord, RecordingStatusUpdate, TwilioStatusUpdate
from archer.db.spool_lines import (
    record_from_json,
    record_to_json,
    recording_from_json,
    recording_to_json,
    status_from_json,
    status_to_json,
)
from archer.errors import StoreError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from archer.call.ports import CallStore

log = structlog.get_logger(__name__)


def instance_spool_path(spool_path: Path, instance_id: str) -> Path:
    """The journal of instance ``instance_id`` for ``SPOOL_PATH=spool_path``.

    ``spool/calls.jsonl`` and ``pod-a`` give ``spool/calls.pod-a.jsonl``.
    """
    return spool_path.with_name(f"{spool_path.stem}.{instance_id}{spool_path.suffix}")


def spool_files(spool_path: Path) -> list[Path]:
    """Every journal beside ``spool_path`` (itself included if it exists), by name.

    That is ``<stem><suffix>`` (a single-process spool of older versions) and every
    ``<stem>.<anything><suffix>``: each instance's journal, and ``--workers`` journals of older
    versions (``calls.worker1.jsonl``).
    """
    directory = spool_path.parent
    if not directory.is_dir():
        return []
    prefix, suffix = f"{spool_path.stem}.", spool_path.suffix
    return sorted(
        path
        for path in directory.iterdir()
        if path.is_file()
        and (
            path.name == spool_path.name
            or (path.name.startswith(prefix) and path.name.endswith(suffix))
        )
    )


def _lock_path(journal: Path) -> Path:
    return journal.with_name(journal.name + ".lock")


def _try_lock(journal: Path) -> int | None:
    """An fd holding the exclusive lock of ``journal``, or None if someone else holds it."""
    fd = os.open(_lock_path(journal), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    except BaseException:
        os.close(fd)
        raise
    return fd


def _release(journal: Path, fd: int, *, remove: bool) -> None:
    """Drop the lock; ``remove`` deletes the lock file first (while still holding it)."""
    try:
        if remove:
            _lock_path(journal).unlink(missing_ok=True)
    finally:
        os.close(fd)


def _release_taken(journal: Path, fd: int) -> None:
    """Drop the lock of another's journal; remove its lock file if replay emptied it (quick)."""
    _release(journal, fd, remove=not journal.exists())


@attrs.define
class _Entry:
    index: int
    line: str
    record: CallRecord | None = None
    status: TwilioStatusUpdate | None = None
    recording: RecordingStatusUpdate | None = None


@attrs.define
class JsonlSpool:
    """This process's fsynced JSON-lines journal at ``path``, and the replay of its family.

    ``family`` is ``SPOOL_PATH``: replay takes every journal ``spool_files(family)`` finds
    (``path`` itself when not given).
    """

    path: Path
    family: Path | None = None
    _lock: trio.Lock = attrs.Factory(trio.Lock)
    #: Whether this process holds ``path``'s lock (``hold``); if not, replay takes it as for
    #: any other journal (``archer spool replay`` beside running servers).
    _holding: bool = False

    @classmethod
    def for_instance(cls, spool_path: Path, instance_id: str) -> JsonlSpool:
        """The journal of instance ``instance_id`` in ``SPOOL_PATH``'s directory."""
        return cls(instance_spool_path(spool_path, instance_id), family=spool_path)

    @contextmanager
    def hold(self) -> Iterator[None]:
        """Hold this journal's lock while the process serves (other instances then leave it).

        Raises:
            OSError: the directory is not writable, or another live process holds the lock
                (two processes with one ``INSTANCE_ID``).
        """
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = _try_lock(self.path)
        if fd is None:
            raise OSError(f"another live process holds the spool journal {self.path}")
        self._holding = True
        try:
            yield
        finally:
            self._holding = False
            # A journal still holding entries keeps its lock file: another instance replays it.
            _release(self.path, fd, remove=not self.path.exists())

    async def append(self, record: CallRecord) -> None:
        """Write ``record`` to disk (flushed and fsynced).

        Raises:
            OSError: the disk refused (full, read-only, …).

        Cancellation: the write finishes in its thread; the record is on disk or not at all
        (a torn last line is skipped and kept by replay).
        """
        async with self._lock:
            await trio.to_thread.run_sync(self._append_sync, record_to_json(record))

    async def append_status(self, update: TwilioStatusUpdate) -> None:
        """Write a status callback to disk (flushed and fsynced), like ``append``.

        Raises:
            OSError: the disk refused (full, read-only, …).

        Cancellation: as ``append``.
        """
        async with self._lock:
            await trio.to_thread.run_sync(self._append_sync, status_to_json(update))

    async def append_recording(self, update: RecordingStatusUpdate) -> None:
        """Write a recording status callback to disk (flushed and fsynced), like ``append``.

        Raises:
            OSError: the disk refused (full, read-only, …).

        Cancellation: as ``append``.
        """
        async with self._lock:
            await trio.to_thread.run_sync(self._append_sync, recording_to_json(update))

    async def depth(self) -> int:
        """How many entries wait in every journal of the family."""
        async with self._lock:
            return await trio.to_thread.run_sync(self._depth_sync)

    async def replay(self, store: CallStore) -> int:
        """Save every spooled entry of every free journal through ``store``; how many wait.

        A journal another live process holds is skipped (and its entries counted as waiting).
        Stops at the first ``StoreError`` (the database is still down) and keeps the rest.

        Cancellation: entries saved so far stay removed only once their journal's rewrite
        finished; otherwise they are saved again next time, which is harmless.
        """
        async with self._lock:
            waiting = 0
            journals = await trio.to_thread.run_sync(spool_files, self.family or self.path)
            if self.path not in journals:
                journals.append(self.path)
            for journal in journals:
                if journal == self.path and self._holding:
                    left, database_down = await self._replay_journal(store, journal)
                else:
                    fd = await trio.to_thread.run_sync(_try_lock, journal)
                    if fd is None:  # its writer is alive and replays it itself
                        waiting += len(await trio.to_thread.run_sync(_read_lines, journal))
                        continue
                    try:
                        left, database_down = await self._replay_journal(store, journal)
                    finally:
                        _release_taken(journal, fd)  # no await: must run even if cancelled
                waiting += left
                if database_down:
                    break
            return waiting

    async def _replay_journal(self, store: CallStore, journal: Path) -> tuple[int, bool]:
        """Replay one journal (its lock held); (entries left, whether the database failed)."""
        lines = await trio.to_thread.run_sync(_read_lines, journal)
        if not lines:
            await trio.to_thread.run_sync(partial(journal.unlink, missing_ok=True))
            return 0, False
        entries, kept = _parse(lines)
        # Call records first, then status callbacks: a status lands after its call record.
        ordered = (
            [e for e in entries if e.record is not None]
            + [e for e in entries if e.status is not None]
            + [e for e in entries if e.recording is not None]  # issue 21, after their calls
        )
        database_down = False
        for position, entry in enumerate(ordered):
            try:
                if entry.record is not None:
                    await store.save_call(entry.record)
                    log.info("spool.replayed", call_sid=entry.record.call_sid)
                elif entry.status is not None:
                    await store.record_twilio_status(entry.status)
                    log.info("spool.status_replayed", call_sid=entry.status.call_sid)
                elif entry.recording is not None:
                    await store.record_recording_status(entry.recording)
                    log.info("spool.recording_replayed", call_sid=entry.recording.call_sid)
            except StoreError as exc:
                log.warning("spool.replay_paused", error=str(exc), waiting=len(ordered) - position)
                kept.extend(ordered[position:])
                database_down = True
                break
        remaining = [entry.line for entry in sorted(kept, key=lambda entry: entry.index)]
        await trio.to_thread.run_sync(_rewrite, journal, remaining)
        return len(remaining), database_down

    def _append_sync(self, line: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as spool:
            spool.write(line + "\n")
            spool.flush()
            os.fsync(spool.fileno())

    def _depth_sync(self) -> int:
        journals = set(spool_files(self.family or self.path)) | {self.path}
        return sum(len(_read_lines(journal)) for journal in journals)


def _parse(lines: list[str]) -> tuple[list[_Entry], list[_Entry]]:
    """The replayable entries of a journal, and the unreadable ones (kept for a person)."""
    entries: list[_Entry] = []
    unreadable: list[_Entry] = []
    for index, line in enumerate(lines):
        entry = _Entry(index, line)
        try:
            entry.status = status_from_json(line)
            if entry.status is None:
                entry.recording = recording_from_json(line)
            if entry.status is None and entry.recording is None:
                entry.record = record_from_json(line)
        except ValueError as exc:
            log.error("spool.unreadable_line", error=str(exc), line=line[:200])
            unreadable.append(entry)  # a person must look at it; never drop a record
            continue
        entries.append(entry)
    return entries, unreadable


def _read_lines(journal: Path) -> list[str]:
    try:
        text = journal.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    return [line for line in text.splitlines() if line.strip()]


def _rewrite(journal: Path, lines: list[str]) -> None:
    if not lines:
        journal.unlink(missing_ok=True)
        return
    temporary = journal.with_name(journal.name + ".tmp")
    with temporary.open("w", encoding="utf-8") as spool:
        spool.write("".join(line + "\n" for line in lines))
        spool.flush()
        os.fsync(spool.fileno())
    temporary.replace(journal)


async def run_spool_replay(
    spool: JsonlSpool,
    store: CallStore,
    *,
    interval: float,
    depth: Callable[[int], None] | None = None,
) -> None:
    """Replay the spool now and every ``interval`` seconds, for as long as the server runs.

    ``depth``, if given, is called with the number of entries still waiting (for metrics).

    Cancellation: stops between replays; a replay in progress keeps what it did not finish.
    """
    while True:
        try:
            waiting = await spool.replay(store)
        except OSError as exc:
            log.error("spool.unreadable", error=str(exc), path=str(spool.path))
        else:
            if depth is not None:
                depth(waiting)
        await trio.sleep(interval)
