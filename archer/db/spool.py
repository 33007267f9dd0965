"""The local spool: call records the database did not take, kept on disk until it does.

Layer: adapter (files). ``JsonlSpool`` satisfies the ``RecordSpool`` port of
``archer.call.ports``; blocking file work runs in worker threads.

Rules: the spool is an append-only JSON-lines journal; every append is flushed and fsynced
before it returns, so a record that left memory is on disk. Replay saves each record through the
``CallStore`` (an idempotent upsert, so a record saved twice — say, a flush that timed out but
committed later — is harmless), then rewrites the file with what is left, atomically (write a
temporary file, fsync, rename). One lock orders appends and replays within the process; each
process has its own spool file: ``archer serve --workers N`` gives worker ``i > 0`` the file
``worker_spool_path`` names next to ``SPOOL_PATH`` (worker 0 keeps ``SPOOL_PATH`` itself).
"""

from __future__ import annotations

import json
import os
import re
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import structlog
import trio

from archer.call.records import CallRecord, ToolCallRecord, TurnRecord
from archer.errors import StoreError

if TYPE_CHECKING:
    from collections.abc import Callable

    from archer.call.ports import CallStore

log = structlog.get_logger(__name__)


def record_to_json(record: CallRecord) -> str:
    """One spool line for ``record`` (no newline)."""
    return json.dumps(attrs.asdict(record, value_serializer=_serialise), separators=(",", ":"))


def record_from_json(line: str) -> CallRecord:
    """The record of one spool line.

    Raises:
        ValueError: the line is not a spooled record.
    """
    try:
        data = json.loads(line)
        return CallRecord(
            **{
                **data,
                "started_at": _time(data["started_at"]),
                "connected_at": _time(data["connected_at"]),
                "ended_at": _time(data["ended_at"]),
                "turns": tuple(TurnRecord(**turn) for turn in data["turns"]),
                "tool_calls": tuple(
                    ToolCallRecord(
                        **{
                            **tool,
                            "started_at": _time(tool["started_at"]),
                            "finished_at": _time(tool["finished_at"]),
                        }
                    )
                    for tool in data["tool_calls"]
                ),
                # Absent from lines spooled before agent events were recorded.
                "agent_events": tuple(dict(event) for event in data.get("agent_events", ())),
            }
        )
    except (KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"not a spooled call record: {exc}") from None


def _serialise(_: Any, __: Any, value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, tuple):
        return list(value)
    return value


def _time(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


def worker_spool_path(path: Path, worker: int) -> Path:
    """The spool file of worker ``worker`` of ``archer serve --workers``, for ``SPOOL_PATH=path``.

    Worker 0 keeps ``path`` (so one worker, or ``--workers 1``, is exactly the plain server);
    worker 1 of ``spool/calls.jsonl`` gets ``spool/calls.worker1.jsonl``. One file per process,
    because the replay's rewrite would lose a line another process appended meanwhile.
    """
    if worker == 0:
        return path
    return path.with_name(f"{path.stem}.worker{worker}{path.suffix}")


def spool_files(path: Path) -> list[Path]:
    """``path`` and every worker spool file beside it that exists (``archer spool replay``)."""
    pattern = re.compile(rf"{re.escape(path.stem)}\.worker([1-9][0-9]*){re.escape(path.suffix)}")
    workers = sorted(
        (int(match[1]), sibling)
        for sibling in (path.parent.iterdir() if path.parent.is_dir() else ())
        if (match := pattern.fullmatch(sibling.name))
    )
    return [path, *(sibling for _, sibling in workers)]


@attrs.define
class JsonlSpool:
    """An fsynced JSON-lines journal of call records at ``path``."""

    path: Path
    _lock: trio.Lock = attrs.Factory(trio.Lock)

    async def append(self, record: CallRecord) -> None:
        """Write ``record`` to disk (flushed and fsynced).

        Raises:
            OSError: the disk refused (full, read-only, …).

        Cancellation: the write finishes in its thread; the record is on disk or not at all
        (a torn last line is skipped and kept by replay).
        """
        async with self._lock:
            await trio.to_thread.run_sync(self._append_sync, record_to_json(record))

    async def depth(self) -> int:
        """How many records wait in the spool."""
        async with self._lock:
            return len(await trio.to_thread.run_sync(self._read_sync))

    async def replay(self, store: CallStore) -> int:
        """Save every spooled record through ``store``; return how many are still waiting.

        Stops at the first ``StoreError`` (the database is still down) and keeps the rest.

        Cancellation: records saved so far stay removed only once the rewrite finished;
        otherwise they are saved again next time, which is harmless.
        """
        async with self._lock:
            lines = await trio.to_thread.run_sync(self._read_sync)
            if not lines:
                return 0
            kept: list[str] = []
            for index, line in enumerate(lines):
                try:
                    record = record_from_json(line)
                except ValueError as exc:
                    log.error("spool.unreadable_line", error=str(exc), line=line[:200])
                    kept.append(line)  # a person must look at it; never drop a record
                    continue
                try:
                    await store.save_call(record)
                except StoreError as exc:
                    log.warning("spool.replay_paused", error=str(exc), waiting=len(lines) - index)
                    kept.extend(lines[index:])
                    break
                log.info("spool.replayed", call_sid=record.call_sid)
            await trio.to_thread.run_sync(self._rewrite_sync, kept)
            return len(kept)

    def _append_sync(self, line: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as spool:
            spool.write(line + "\n")
            spool.flush()
            os.fsync(spool.fileno())

    def _read_sync(self) -> list[str]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        return [line for line in text.splitlines() if line.strip()]

    def _rewrite_sync(self, lines: list[str]) -> None:
        if not lines:
            self.path.unlink(missing_ok=True)
            return
        temporary = self.path.with_suffix(self.path.suffix + ".tmp")
        with temporary.open("w", encoding="utf-8") as spool:
            spool.write("".join(line + "\n" for line in lines))
            spool.flush()
            os.fsync(spool.fileno())
        temporary.replace(self.path)


async def run_spool_replay(
    spool: JsonlSpool,
    store: CallStore,
    *,
    interval: float,
    depth: Callable[[int], None] | None = None,
) -> None:
    """Replay the spool now and every ``interval`` seconds, for as long as the server runs.

    ``depth``, if given, is called with the number of records still waiting (for metrics).

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
