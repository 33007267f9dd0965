"""``archer emulate cartesia`` and ``archer emulate call``: one emulator, against any Archer.

Layer: cli (wiring). Both read the same settings as ``archer serve`` (environment and ``.env``),
so one ``.env`` configures Archer and its emulated peers alike: the Cartesia emulator accepts
``CARTESIA_API_KEY`` and serves ``CARTESIA_AGENT_ID`` (and ``agent_emulated``); the caller signs
with ``TWILIO_AUTH_TOKEN`` for ``WEBHOOK_BASE_URL`` and runs the emulated Twilio REST API on
``--rest-port`` (point Archer's ``TWILIO_API_BASE_URL`` at it). ``archer emulate call`` exits 0
only for a completed call: every step of the caller's script done, nothing invalid from Archer.
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING

import trio

from archer.audio.wav import Audio, write_wav
from archer.emulators.cartesia.script import load_agent_script
from archer.emulators.cartesia.server import CartesiaEmulator, serve_cartesia_emulator
from archer.emulators.twilio.caller import EmulatedCaller
from archer.emulators.twilio.rest import TwilioRestState, serve_twilio_rest
from archer.emulators.twilio.script import load_caller_script
from archer.errors import ConfigError

if TYPE_CHECKING:
    from pathlib import Path

    from archer.settings import Settings


def _print(line: str) -> None:
    print(f"  · {line}", flush=True)


def run_cartesia(settings: Settings, *, host: str, port: int, script: str) -> None:
    """Serve the Cartesia emulator until interrupted."""
    if not settings.cartesia_api_key:
        raise ConfigError("CARTESIA_API_KEY is required: the emulator accepts only that key")
    emulator = CartesiaEmulator(
        api_key=settings.cartesia_api_key,
        script=load_agent_script(script),
        also_agent_ids=frozenset({settings.cartesia_agent_id} - {""}),
        progress=_print,
    )

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            url = await nursery.start(
                partial(serve_cartesia_emulator, emulator, host=host, port=port)
            )
            agents = ", ".join(sorted({emulator.agent_id, *emulator.also_agent_ids}))
            print(f"Cartesia emulator on {url} (agents {agents}); Ctrl-C stops it", flush=True)

    trio.run(main)


def run_call(
    settings: Settings,
    *,
    url: str,
    script: str,
    from_number: str,
    rest_port: int,
    out: Path | None,
) -> int:
    """Place one emulated call to the Archer at ``url``; 0 only if it completed.

    Completed: the caller's script ran to its last step (a refused webhook, a call Archer cut
    short or a step that timed out is not) and Archer sent nothing Twilio would flag.
    """
    for name, value in (
        ("WEBHOOK_BASE_URL", settings.webhook_base_url),
        ("TWILIO_ACCOUNT_SID", settings.twilio_account_sid),
        ("TWILIO_AUTH_TOKEN", settings.twilio_auth_token),
    ):
        if not value:
            raise ConfigError(f"{name} is required: the emulated Twilio signs with it")
    rest = TwilioRestState(
        account_sid=settings.twilio_account_sid, auth_token=settings.twilio_auth_token
    )
    caller_script = load_caller_script(script)
    caller = EmulatedCaller(
        archer_url=url.rstrip("/"),
        public_base_url=settings.webhook_base_url,
        account_sid=settings.twilio_account_sid,
        auth_token=settings.twilio_auth_token,
        from_number=from_number,
        script=caller_script,
        rest=rest,
        progress=_print,
    )

    async def main() -> int:
        async with trio.open_nursery() as nursery:
            rest_url = await nursery.start(partial(serve_twilio_rest, rest, port=rest_port))
            print(f"emulated Twilio REST API on {rest_url}; calling {url} from {from_number}")
            outcome = await caller.run()
            nursery.cancel_scope.cancel(reason="the emulated call is over")
        if out is not None:
            write_wav(out, Audio(8000, "mulaw", outcome.heard))
        print(
            f"call {outcome.call_sid}: ended by {outcome.ended_by}, "
            f"{outcome.media_frames_received} media frames heard, "
            f"{len(outcome.invalid)} invalid messages from Archer"
        )
        for problem in outcome.invalid:
            print(f"  ✗ {problem}")
        steps = len(caller_script.steps)
        if outcome.steps_done < steps:
            print(f"  ✗ not completed: {outcome.steps_done} of {steps} steps; {outcome.detail}")
            return 1
        return 0 if not outcome.invalid else 1

    return trio.run(main)
