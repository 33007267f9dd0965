"""Protocol drift from the agent through a live call: the call goes on.

Hypothesis writes every agent event of both protocols with wrong-typed values in the fields Archer
only records or logs, and with fields no document names; the messages are written here by hand
(``json.dumps``), not by Archer's builders. Each example is one real call over loopback (real
hypercorn, real websockets, SQLite): after the drifting events, the agent's next turn still
reaches the caller, and the call ends as the caller ends it, never as ``protocol_error``.

pytest-trio's fixtures do not mix with ``@given``, so each example runs its own ``trio.run``.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio
import trio_websocket
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from archer.call.records import CallRecord
from tests.e2e.peers import STEP_TIMEOUT, AgentPeer
from tests.e2e.test_call import running_system
from tests.e2e.test_line_faults import serve_line_agent, unused
from tests.helpers import audio

BUDGET = settings(
    max_examples=4,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    # Each example is a real call of a few seconds: a failure is reported as found, unshrunk.
    phases=[Phase.explicit, Phase.generate],
)
#: The agent's last frame: once the caller hears it, the drifting events did not end the call.
PROOF = audio(77)

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    # JSON has no NaN or Infinity: a message with one is not drift but not JSON at all.
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=8,
)
unknown_fields = st.dictionaries(
    st.sampled_from(["x_new", "metadata_v2", "latency_ms", "confidence", "trace"]),
    json_values,
    max_size=3,
)


def drifting(template: dict[str, Any], lenient: tuple[str, ...]) -> st.SearchStrategy[str]:
    """``template`` with any of its ``lenient`` fields replaced by any JSON, plus unknown ones."""
    overrides = st.fixed_dictionaries({}, optional={field: json_values for field in lenient})
    return st.builds(
        lambda extra, changed: json.dumps({**extra, **template, **changed}),
        unknown_fields,
        overrides,
    )


MANAGED_TURN = {"turn": 3, "role": "assistant"}
MANAGED_EVENTS = st.tuples(
    drifting({"type": "turn_started", **MANAGED_TURN, "start_time": 0.5}, ("start_time",)),
    drifting(
        {"type": "turn_output_text_delta", **MANAGED_TURN, "text": "Hello "}, ("role", "text")
    ),
    drifting(
        {
            "type": "turn_ended",
            **MANAGED_TURN,
            "text": "Hello there",
            "interrupted": False,
            "start_time": 0.5,
            "end_time": 1.5,
            "tool_calls": [],
        },
        ("text", "interrupted", "start_time", "end_time", "tool_calls", "eager_end_timestamp"),
    ),
    drifting(
        {"type": "session_ready", "call_id": "ac_e2eCall0001"},
        ("agent_id", "agent_version_id", "audio"),
    ),
    drifting({"type": "error", "code": "invalid_event", "fatal": False}, ("message",)),
    drifting({"type": "x_event_from_the_future"}, ("payload",)),
)
LINE_EVENTS = st.tuples(
    drifting({"event": "ack", "stream_id": "sid_d"}, ("config", "agent")),
    drifting({"type": "error"}, ("message", "title", "error_code", "status_code")),
    drifting({"event": "custom", "metadata": {"mood": "fine"}}, ("stream_id",)),
    drifting({"event": "x_event_from_the_future"}, ("payload",)),
)


async def live_call(
    database_url: str, play: Callable[[Callable[[str], Any]], Any], protocol: str
) -> CallRecord:
    """A call whose agent sends whatever ``play`` sends; the caller waits for ``PROOF``."""

    async def managed_agent(peer: AgentPeer) -> None:
        await peer.accept_session()
        await play(peer.send)

    async def line_agent(websocket: trio_websocket.WebSocketConnection) -> None:
        ack = {"event": "ack", "stream_id": "sid_d", "config": {"input_format": "mulaw_8000"}}
        await websocket.send_message(json.dumps(ack))
        await play(websocket.send_message)
        await trio.sleep(STEP_TIMEOUT)

    async with trio.open_nursery() as outer:
        line_url = await outer.start(serve_line_agent, line_agent) if protocol == "line" else None
        async with running_system(
            database_url,
            managed_agent if protocol == "managed" else unused,
            protocol=protocol,
            agent_server_url=line_url,
        ) as system:
            caller = system.caller
            await caller.dial()
            async with trio.open_nursery() as nursery:
                await caller.connect(nursery)
                await caller.speak(audio(1))
                await caller.wait_for(lambda frames: PROOF in caller.media())
                await caller.stop()
                stored = await system.wait_for_record(lambda s: s.record.end_reason is not None)
                nursery.cancel_scope.cancel()
        outer.cancel_scope.cancel()
    return stored.record


def run_example(messages: tuple[str, ...], proof: tuple[str, ...], protocol: str) -> None:
    async def play(send: Callable[[str], Any]) -> None:
        for message in (*messages, *proof):
            await send(message)

    with tempfile.TemporaryDirectory() as folder:
        database_url = f"sqlite:///{Path(folder) / 'archer.db'}"
        record = trio.run(live_call, database_url, play, protocol)
    assert (record.status, record.end_reason) == ("completed", "caller_hangup")


@BUDGET
@given(messages=MANAGED_EVENTS)
def test_managed_events_with_drifting_fields_leave_the_call_going(
    messages: tuple[str, ...],
) -> None:
    """Wrong-typed logged-only fields and unknown fields in every Managed event: the call lasts."""
    proof = (
        json.dumps({"type": "turn_started", "turn": 5, "role": "assistant", "start_time": 2.0}),
        json.dumps({"type": "audio_output", "audio": PROOF}),
    )
    run_example(messages, proof, "managed")


@BUDGET
@given(messages=LINE_EVENTS)
def test_line_events_with_drifting_fields_leave_the_call_going(messages: tuple[str, ...]) -> None:
    """The same for every Line event Archer only logs or records."""
    proof = (
        json.dumps({"event": "media_output", "stream_id": "sid_d", "media": {"payload": PROOF}}),
    )
    run_example(messages, proof, "line")
