"""Prometheus metrics: one ``Metrics`` per server, with its own registry, passed explicitly.

Layer: process wiring (like ``server``). The rest of the code calls one cheap method at one
place for each thing it counts; ``archer.web.metrics`` serves ``render()`` on ``GET /metrics``.

Rules:
- Every label value comes from a fixed enumeration below; anything else becomes ``"other"``.
  A CallSid, a phone number or a customer id is never a label value: per-call detail belongs in
  the ``call.finished`` log line and the call record, not in a time series.
- Nothing here runs per frame except ``frame_latency``, and that is fed a sample (one frame in
  ``FRAME_LATENCY_SAMPLE_EVERY``). The per-call counters (frames, barge-ins, tool calls) are
  plain ints on ``CallState`` and reach the metrics once, in ``call_finished``.
- The registry is this object's own, not ``prometheus_client.REGISTRY``: tests build several
  apps in one process.
- ``archer serve --workers N``: the supervisor gives the workers one fresh directory in
  ``PROMETHEUS_MULTIPROC_DIR`` (prometheus_client's multiprocess mode: every worker's values
  live in memory-mapped files there), and ``render`` then reads every worker's files, so one
  scrape of the shared port reports the whole server whichever worker answers it. Gauges say
  how workers combine (``livesum``: the sum over running workers). The per-process
  ``process_*`` collector is left out in that mode (it would describe only the worker that
  answered); use the container's CPU and memory instead.

Size (over 400 lines, on purpose): every series Archer exports is declared here, beside the
fixed label enumerations that bound it, so one file answers "what does /metrics show and what
can each label be"; the methods are one line of counting each.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Final, Literal, get_args

import attrs
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector

from archer.call.records import END_REASONS, PIN_CAPTURE_OUTCOMES, CallStatus

if TYPE_CHECKING:
    from archer.call.records import CallRecord

#: prometheus_client's own variable: set (by the ``--workers`` supervisor) before it is imported,
#: it stores every value in files in that directory, one set per process.
MULTIPROC_DIR_VARIABLE: Final = "PROMETHEUS_MULTIPROC_DIR"

#: The value of any label that is not one of its fixed set.
OTHER: Final = "other"

FrameDirection = Literal["to_agent", "to_caller"]
#: ``to_agent``: caller audio from Twilio towards the agent; ``to_caller``: the reverse.
FRAME_DIRECTIONS: Final[tuple[FrameDirection, ...]] = get_args(FrameDirection)
#: Drops of a call whose state keeps one combined dropped counter (see ``call_finished``).
EITHER_DIRECTION: Final = "either"
FRAME_OUTCOMES: Final = ("sent", "dropped")
#: Feed ``frame_latency`` one frame in this many (at 50 frames/s: one a second per direction).
FRAME_LATENCY_SAMPLE_EVERY: Final = 50

CALL_STATUSES: Final[tuple[str, ...]] = get_args(CallStatus)

#: ``ok``: the tool answered; ``error``: an ``is_error`` result (refusal, failure, timeout,
#: unknown tool, bad arguments, busy); ``unfinished``: cancelled with the call before answering.
TOOL_OUTCOMES: Final = ("ok", "error", "unfinished")

#: The Twilio REST operations Archer performs (``archer.twilio.rest``).
TWILIO_OPERATIONS: Final = (
    "transfer",
    "hang_up",
    # A keypad PIN entry pauses the call's recording and resumes it (issue 21).
    "pause_recording",
    "resume_recording",
)
#: ``ok``: Twilio accepted; ``call_over``: a hang-up of a call that had already ended (harmless);
#: ``refused``: Twilio answered with an error; ``error``: Twilio was not reached (network,
#: timeout) or the request was malformed before sending.
TWILIO_OUTCOMES: Final = ("ok", "call_over", "refused", "error")

#: ``archer_pin_captures_total{outcome}``: a ``collect_pin``'s outcome (``PIN_CAPTURE_OUTCOMES``,
#: from ``tool_calls.outcome``), or ``unfinished`` for one the call's end left unanswered and
#: unrecorded. Never a digit or a digit count.
PIN_CAPTURE_LABELS: Final = (*PIN_CAPTURE_OUTCOMES, "unfinished")
#: ``archer_recording_requests_total{action, result}``: a pause or resume of the call's recording
#: around a keypad entry: ``accepted``; ``refused`` (Twilio answered with an error code);
#: ``error`` (Twilio not reached).
RECORDING_ACTIONS: Final = ("pause", "resume")
RECORDING_RESULTS: Final = ("accepted", "refused", "error")

#: The database units of work (``SqlCallStore`` and ``SqlBankStore`` name each ``_run``).
DB_OPERATIONS: Final = (
    "open_call",
    "claim_stream",
    "save_call",
    "record_twilio_status",
    "record_recording",
    "check",
    "load_call",
    "pin_hash",
    "accounts",
    "recent_transactions",
    "set_card_status",
)

#: What a call that found the process at MAX_ACTIVE_CALLS got: the apology, or OVERFLOW_NUMBER.
OVERFLOW_OUTCOMES: Final = ("apology", "redirected")
#: ``archer_agent_reconnects_total``: a new agent session opened, an attempt failed, an
#: outage's budget spent (the caller went to a person or was hung up on; issue 16).
RECONNECT_OUTCOMES: Final = ("reconnected", "failed", "gave_up")

#: Why caller frames reached the agent as silence (issue 21): a keypad capture was running, or
#: the frame carried a keypad tone while keys are withheld (``CallState.frames_silenced_for_*``).
SILENCE_REASONS: Final = ("pin_capture", "keypad_tone")

#: Routes that check ``X-Twilio-Signature``.
SIGNED_ROUTES: Final = ("/twilio/voice", "/twilio/status", "/ws/cartesia", "/twilio/recording")

# Buckets, in seconds. Calls run minutes (MAX_CALL_SECONDS caps them at an hour by default).
CALL_DURATION_BUCKETS: Final = (5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0)
# Connect + session_ready; AGENT_READY_TIMEOUT (10 s) ends the call past the last bucket.
AGENT_SETUP_BUCKETS: Final = (0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)
# What Archer adds to one 20 ms frame: microseconds in passthrough, more when resampling.
FRAME_LATENCY_BUCKETS: Final = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.02,
    0.05,
    0.1,
    0.25,
)
# Tools run against the bank's database; TOOL_TIMEOUT (8 s) turns a slower one into an error.
TOOL_LATENCY_BUCKETS: Final = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0)
# Statements and pool checkouts give up after 5 s (archer.db.engine).
DB_LATENCY_BUCKETS: Final = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)


def _bounded(value: str, allowed: Iterable[str]) -> str:
    return value if value in allowed else OTHER


def _count(value: object) -> int:
    """A counter from a summary or record field: a non-negative int, else 0."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def _default_tool_names() -> frozenset[str]:
    from archer.bank.definitions import load_definitions

    return frozenset(definition.name for definition in load_definitions())


@attrs.define(eq=False)
class Metrics:
    """Archer's metrics and the registry they live in; build once per server.

    ``tool_names`` bounds the ``tool`` label: the names in ``archer/bank/tools.json`` by default;
    any other tool name is counted as ``"other"``. ``multiprocess_dir``: the directory of
    prometheus_client's multiprocess mode (``--workers``), which ``render`` aggregates; it must
    be the ``PROMETHEUS_MULTIPROC_DIR`` this process started with.
    """

    tool_names: frozenset[str] = attrs.field(factory=_default_tool_names, converter=frozenset)
    multiprocess_dir: Path | None = None
    #: This process's cap (MAX_ACTIVE_CALLS), reported as ``archer_calls_capacity``.
    max_active_calls: int | None = None
    registry: CollectorRegistry = attrs.field(init=False, factory=CollectorRegistry)

    calls_active: Gauge = attrs.field(init=False)
    calls: Counter = attrs.field(init=False)
    call_duration: Histogram = attrs.field(init=False)
    agent_setup: Histogram = attrs.field(init=False)
    frames: Counter = attrs.field(init=False)
    frame_latency_seconds: Histogram = attrs.field(init=False)
    barge_ins: Counter = attrs.field(init=False)
    frames_silenced: Counter = attrs.field(init=False)
    tool_calls: Counter = attrs.field(init=False)
    tool_latency: Histogram = attrs.field(init=False)
    twilio_rest_requests: Counter = attrs.field(init=False)
    db_latency: Histogram = attrs.field(init=False)
    db_errors: Counter = attrs.field(init=False)
    spool_depth_gauge: Gauge = attrs.field(init=False)
    signature_rejections: Counter = attrs.field(init=False)
    webhook_apologies: Counter = attrs.field(init=False)
    calls_overflowed: Counter = attrs.field(init=False)
    calls_capacity: Gauge = attrs.field(init=False)
    calls_reaped: Counter = attrs.field(init=False)
    agent_reconnects: Counter = attrs.field(init=False)
    pin_captures: Counter = attrs.field(init=False)
    recording_requests: Counter = attrs.field(init=False)
    _latency_by_direction: dict[str, Histogram] = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        registry = self.registry
        if self.multiprocess_dir is None:
            # CPU, memory, open files and start time of this process (Linux; nothing elsewhere).
            ProcessCollector(registry=registry)
        self.calls_active = Gauge(
            "archer_calls_active",
            "Calls being bridged now.",
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.calls = Counter(
            "archer_calls_total",
            "Calls finished, by status and end reason (calls.status, calls.end_reason).",
            ["status", "end_reason"],
            registry=registry,
        )
        self.call_duration = Histogram(
            "archer_call_duration_seconds",
            "Media-stream duration of finished calls (calls.duration_ms).",
            buckets=CALL_DURATION_BUCKETS,
            registry=registry,
        )
        self.agent_setup = Histogram(
            "archer_agent_setup_seconds",
            "Time from opening the agent session to session_ready.",
            buckets=AGENT_SETUP_BUCKETS,
            registry=registry,
        )
        self.frames = Counter(
            "archer_frames_total",
            "20 ms audio frames of finished calls, by direction and outcome. direction=either"
            " holds drops of calls whose direction was not recorded.",
            ["direction", "outcome"],
            registry=registry,
        )
        self.frame_latency_seconds = Histogram(
            "archer_frame_latency_seconds",
            f"Latency Archer adds to one audio frame (sampled: 1 frame in"
            f" {FRAME_LATENCY_SAMPLE_EVERY}).",
            ["direction"],
            buckets=FRAME_LATENCY_BUCKETS,
            registry=registry,
        )
        self.barge_ins = Counter(
            "archer_barge_ins_total", "Times callers interrupted the agent.", registry=registry
        )
        self.frames_silenced = Counter(
            "archer_caller_frames_silenced_total",
            "Caller frames of finished calls sent to the agent as silence, by reason: a keypad"
            " capture ran (pin_capture), or the frame carried a keypad tone while keys are"
            " withheld from the agent (keypad_tone).",
            ["reason"],
            registry=registry,
        )
        for reason in SILENCE_REASONS:
            self.frames_silenced.labels(reason)
        self.tool_calls = Counter(
            "archer_tool_calls_total",
            "Client tool invocations, by tool and outcome.",
            ["tool", "outcome"],
            registry=registry,
        )
        self.tool_latency = Histogram(
            "archer_tool_latency_seconds",
            "Time from a tool request to its result, for answered invocations.",
            ["tool"],
            buckets=TOOL_LATENCY_BUCKETS,
            registry=registry,
        )
        self.twilio_rest_requests = Counter(
            "archer_twilio_rest_requests_total",
            "Twilio REST API requests (call updates), by operation and outcome.",
            ["operation", "outcome"],
            registry=registry,
        )
        self.db_latency = Histogram(
            "archer_db_operation_seconds",
            "Database units of work, including the wait for a pooled connection.",
            ["operation"],
            buckets=DB_LATENCY_BUCKETS,
            registry=registry,
        )
        self.db_errors = Counter(
            "archer_db_errors_total",
            "Database units of work that failed (StoreError).",
            ["operation"],
            registry=registry,
        )
        self.spool_depth_gauge = Gauge(
            "archer_spool_depth",
            "Call records in the spool waiting to be replayed into the database.",
            registry=registry,
            # Workers may replay the same spool files: the largest count, not the sum.
            multiprocess_mode="livemax",
        )
        self.signature_rejections = Counter(
            "archer_signature_rejections_total",
            "Requests refused because X-Twilio-Signature did not match, by route.",
            ["route"],
            registry=registry,
        )
        self.webhook_apologies = Counter(
            "archer_webhook_apologies_total",
            "Incoming calls answered with the apology TwiML (database down or draining).",
            registry=registry,
        )
        self.calls_overflowed = Counter(
            "archer_calls_overflowed_total",
            "Incoming calls turned away at MAX_ACTIVE_CALLS, by what they got.",
            ["outcome"],
            registry=registry,
        )
        self.calls_capacity = Gauge(
            "archer_calls_capacity",
            "Calls this server takes at most (MAX_ACTIVE_CALLS, summed over workers).",
            registry=registry,
            multiprocess_mode="livesum",
        )
        if self.max_active_calls is not None:
            self.calls_capacity.set(self.max_active_calls)
        for outcome in OVERFLOW_OUTCOMES:
            self.calls_overflowed.labels(outcome)
        # Agent sessions replaced mid-call (issue 16), by outcome: a new session opened
        # (reconnected), an attempt failed (failed), an outage's budget spent (gave_up).
        self.agent_reconnects = Counter(
            "archer_agent_reconnects_total",
            "Agent session reconnects, by outcome (reconnected, failed, gave_up).",
            ["outcome"],
            registry=registry,
        )
        for outcome in RECONNECT_OUTCOMES:
            self.agent_reconnects.labels(outcome)
        # Keypad PIN entries and the recording pauses around them (issue 21), from the record.
        self.pin_captures = Counter(
            "archer_pin_captures_total",
            "Keypad PIN entries (collect_pin) of finished calls, by outcome.",
            ["outcome"],
            registry=registry,
        )
        for outcome in (*PIN_CAPTURE_LABELS, OTHER):
            self.pin_captures.labels(outcome)
        self.recording_requests = Counter(
            "archer_recording_requests_total",
            "Pauses and resumes of call recordings around keypad PIN entries, by action and"
            " result (accepted, refused by Twilio, error: Twilio not reached).",
            ["action", "result"],
            registry=registry,
        )
        for action in RECORDING_ACTIONS:
            for result in RECORDING_RESULTS:
                self.recording_requests.labels(action, result)
        # Calls another party finished because their instance died or overran (archer.db.instances).
        self.calls_reaped = Counter(
            "archer_calls_reaped_total",
            "Open calls this instance's reaper finished, by end reason (instance_lost, overdue).",
            ["end_reason"],
            registry=registry,
        )
        for reason in ("instance_lost", "overdue"):
            self.calls_reaped.labels(reason)
        # Series with fixed label sets start at zero, so rate() and alerts see them at once.
        for direction in FRAME_DIRECTIONS:
            for outcome in FRAME_OUTCOMES:
                self.frames.labels(direction, outcome)
        self._latency_by_direction = {
            direction: self.frame_latency_seconds.labels(direction)
            for direction in FRAME_DIRECTIONS
        }
        for tool in (*sorted(self.tool_names), OTHER):
            self.tool_latency.labels(tool)
            for outcome in TOOL_OUTCOMES:
                self.tool_calls.labels(tool, outcome)
        for operation in TWILIO_OPERATIONS:
            for outcome in TWILIO_OUTCOMES:
                self.twilio_rest_requests.labels(operation, outcome)
        for operation in DB_OPERATIONS:
            self.db_latency.labels(operation)
            self.db_errors.labels(operation)
        for route in SIGNED_ROUTES:
            self.signature_rejections.labels(route)

    # --- calls --------------------------------------------------------------------------------

    def call_started(self) -> None:
        """A media stream proved its token and the call is being bridged."""
        self.calls_active.inc()

    def call_finished(self, summary: Mapping[str, object], record: CallRecord) -> None:
        """A call started with ``call_started`` is over and flushed (or spooled).

        Reads status, end reason, duration, frames, tool calls (keypad PIN entries by outcome)
        and recording pauses/resumes from ``record``, and the barge-ins and silenced caller
        frames from ``summary`` (``CallState.summary()``). Frames: ``to_agent`` counts Twilio
        media frames received (``frames_in``) less those dropped on the way to the agent;
        ``to_caller`` counts frames sent to Twilio (``frames_out``). Audio of an interrupted
        turn discarded at a barge-in is neither sent nor dropped. If ``summary`` has
        ``frames_dropped_to_agent`` and ``frames_dropped_to_caller`` the drops are attributed;
        otherwise ``frames_dropped`` is counted under ``direction="either"``.
        """
        self.calls_active.dec()
        self.calls.labels(
            _bounded(record.status, CALL_STATUSES),
            _bounded(record.end_reason or "", END_REASONS),
        ).inc()
        if record.duration_ms is not None:
            self.call_duration.observe(record.duration_ms / 1000)
        self._count_frames(summary, record)
        for outcome, n in (
            ("reconnected", _count(summary.get("agent_reconnects"))),
            ("failed", _count(summary.get("agent_reconnect_failures"))),
            ("gave_up", int(record.end_reason in ("agent_lost", "agent_lost_transferred"))),
        ):
            if n:
                self.agent_reconnects.labels(outcome).inc(n)
        barge_ins = _count(summary.get("barge_ins"))
        if barge_ins:
            self.barge_ins.inc(barge_ins)
        for reason, n in (
            ("pin_capture", _count(summary.get("frames_silenced_for_pin"))),
            ("keypad_tone", _count(summary.get("frames_silenced_for_tones"))),
        ):
            if n:
                self.frames_silenced.labels(reason).inc(n)
        self._count_keypad(record)
        for tool_call in record.tool_calls:
            tool = _bounded(tool_call.name, self.tool_names)
            if tool_call.finished_at is None:
                self.tool_calls.labels(tool, "unfinished").inc()
                continue
            self.tool_calls.labels(tool, "error" if tool_call.is_error else "ok").inc()
            elapsed = (tool_call.finished_at - tool_call.started_at).total_seconds()
            self.tool_latency.labels(tool).observe(max(0.0, elapsed))

    def _count_keypad(self, record: CallRecord) -> None:
        """Keypad PIN entries by outcome and the recording requests around them (issue 21)."""
        for tool_call in record.tool_calls:
            if tool_call.name != "collect_pin":
                continue
            if tool_call.finished_at is None:
                outcome = "unfinished"
            else:
                outcome = _bounded(tool_call.outcome or "", PIN_CAPTURE_OUTCOMES)
            self.pin_captures.labels(outcome).inc()
        for event in record.recording_events:
            if event.accepted:
                result = "accepted"
            else:
                result = "refused" if event.error_code is not None else "error"
            self.recording_requests.labels(_bounded(event.action, RECORDING_ACTIONS), result).inc()

    def _count_frames(self, summary: Mapping[str, object], record: CallRecord) -> None:
        frames_in, frames_out = _count(record.frames_in), _count(record.frames_out)
        if "frames_dropped_to_agent" in summary and "frames_dropped_to_caller" in summary:
            to_agent = _count(summary["frames_dropped_to_agent"])
            to_caller = _count(summary["frames_dropped_to_caller"])
            either = 0
        else:
            to_agent, to_caller, either = 0, 0, _count(record.frames_dropped)
        sent_to_agent = max(0, frames_in - to_agent)
        for direction, outcome, amount in (
            ("to_agent", "sent", sent_to_agent),
            ("to_agent", "dropped", to_agent),
            ("to_caller", "sent", frames_out),
            ("to_caller", "dropped", to_caller),
            (EITHER_DIRECTION, "dropped", either),
        ):
            if amount:
                self.frames.labels(direction, outcome).inc(amount)

    def agent_ready(self, seconds: float) -> None:
        """The agent session answered ``session_ready`` ``seconds`` after it was opened."""
        self.agent_setup.observe(seconds)

    def frame_latency(self, direction: FrameDirection, seconds: float) -> None:
        """One sampled frame spent ``seconds`` inside Archer (feed 1 in the sample rate)."""
        child = self._latency_by_direction.get(direction)
        if child is not None:
            child.observe(seconds)

    # --- dependencies -------------------------------------------------------------------------

    def twilio_rest(self, operation: str, outcome: str) -> None:
        """One Twilio REST request ended with ``outcome`` (see ``TWILIO_OUTCOMES``)."""
        self.twilio_rest_requests.labels(
            _bounded(operation, TWILIO_OPERATIONS), _bounded(outcome, TWILIO_OUTCOMES)
        ).inc()

    def db_operation(self, operation: str, seconds: float, *, error: bool) -> None:
        """One database unit of work took ``seconds``; ``error`` if it raised ``StoreError``."""
        name = _bounded(operation, DB_OPERATIONS)
        self.db_latency.labels(name).observe(seconds)
        if error:
            self.db_errors.labels(name).inc()

    def call_reaped(self, end_reason: str) -> None:
        """This instance's reaper finished a call its own instance could not."""
        self.calls_reaped.labels(_bounded(end_reason, END_REASONS)).inc()

    def spool_depth(self, n: int) -> None:
        """The spool now holds ``n`` records waiting for the database."""
        self.spool_depth_gauge.set(n)

    # --- the web edge -------------------------------------------------------------------------

    def signature_rejected(self, route: str) -> None:
        """A request to ``route`` was refused: its Twilio signature did not match."""
        self.signature_rejections.labels(_bounded(route, SIGNED_ROUTES)).inc()

    def apology(self) -> None:
        """An incoming call was answered with the apology TwiML instead of a stream."""
        self.webhook_apologies.inc()

    def overflow(self, *, redirected: bool) -> None:
        """An incoming call found the process at MAX_ACTIVE_CALLS (sent on, or apologised to)."""
        self.calls_overflowed.labels("redirected" if redirected else "apology").inc()

    # --- exposition ---------------------------------------------------------------------------

    def render(self) -> tuple[bytes, str]:
        """The metrics in Prometheus' text format, and its content type.

        In multiprocess mode: every worker's, aggregated from ``multiprocess_dir`` (read at
        each scrape, so it sees workers that started or stopped since).
        """
        if self.multiprocess_dir is None:
            return generate_latest(self.registry), CONTENT_TYPE_LATEST
        everyone = CollectorRegistry()
        MultiProcessCollector(everyone, path=str(self.multiprocess_dir))  # type: ignore[no-untyped-call]
        return generate_latest(everyone), CONTENT_TYPE_LATEST
