"""Caller scripts for the Twilio emulator: the steps a caller takes, read from JSON data.

Layer: emulator, pure (no trio, no I/O except reading a script file or a shipped one through
``importlib.resources``). Shipped scripts live in ``archer/emulators/scripts``; a script is
one step per object, e.g. ``{"say": "caller_balance"}``, and ``parse_caller_script`` documents
the steps. Bad data raises ``ScriptError`` naming the step, before any call is placed.

Adding a step: an ``attrs.frozen`` class here, its JSON key in ``_KIND_OF``, its parsing in
``_parse_step``, its progress line in ``describe``, and how it plays in
``archer.emulators.twilio.stream``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Final

import attrs

from archer.audio.clips import CLIP_NAMES, clip_text

#: The keys a caller can press, as Twilio's ``dtmf`` message reports them (reference §3.2).
KEYPAD: Final = frozenset("0123456789*#")

__all__ = [
    "CallerScript",
    "HangUp",
    "Pause",
    "Press",
    "Say",
    "ScriptError",
    "ScriptStep",
    "WaitForAgent",
    "WaitForAgentSpeech",
    "WaitForHangup",
    "describe",
    "load_caller_script",
    "parse_caller_script",
    "shipped_scripts",
    "step_kind",
]

_SCRIPTS_PACKAGE: Final = "archer.emulators"
_SCRIPTS_DIR: Final = "scripts"


class ScriptError(ValueError):
    """A caller script is not valid; the message names the step and what is wrong."""


@attrs.frozen
class WaitForAgent:
    """Until agent audio has played (since this step began) and then ``quiet_ms`` of quiet."""

    quiet_ms: int = 800
    timeout: float = 30.0


@attrs.frozen
class WaitForAgentSpeech:
    """Until agent audio plays (since this step began)."""

    timeout: float = 30.0


@attrs.frozen
class Pause:
    """The caller stays quiet (silence is still streamed) for ``seconds``."""

    seconds: float


@attrs.frozen
class Say:
    """Stream the speech clip ``clip`` in real time, 20 ms frames."""

    clip: str


@attrs.frozen
class Press:
    """Key in ``digits`` (``dtmf`` events), ``gap_ms`` apart."""

    digits: str
    gap_ms: int = 300


@attrs.frozen
class HangUp:
    """The caller hangs up: ``stop``, then the socket closes."""


@attrs.frozen
class WaitForHangup:
    """Until Archer closes the stream or ends the call over REST."""

    timeout: float = 30.0


ScriptStep = WaitForAgent | WaitForAgentSpeech | Pause | Say | Press | HangUp | WaitForHangup

#: Each step's JSON key.
_KIND_OF: Final[Mapping[type[ScriptStep], str]] = {
    WaitForAgent: "wait_for_agent",
    WaitForAgentSpeech: "wait_for_agent_speech",
    Pause: "pause",
    Say: "say",
    Press: "press",
    HangUp: "hang_up",
    WaitForHangup: "wait_for_hangup",
}
_STEP_KINDS: Final = tuple(_KIND_OF.values())


@attrs.frozen
class CallerScript:
    """What the caller does, step by step."""

    steps: tuple[ScriptStep, ...]
    name: str = "script"
    description: str = ""

    @property
    def clips(self) -> tuple[str, ...]:
        """Every clip the script says, once each, in order of first use."""
        return tuple(dict.fromkeys(step.clip for step in self.steps if isinstance(step, Say)))


def parse_caller_script(data: object, *, name: str = "script") -> CallerScript:
    """A ``CallerScript`` from JSON data: ``{"description": ..., "steps": [...]}`` or a list.

    Each step is an object with exactly one of these keys:

    - ``{"wait_for_agent": {"quiet_ms": 800, "timeout": 30}}`` (both optional)
    - ``{"wait_for_agent_speech": {"timeout": 30}}``
    - ``{"pause": 1.5}`` (seconds)
    - ``{"say": "<clip name>"}``
    - ``{"press": "1234", "gap_ms": 300}`` (``gap_ms`` optional; digits 0-9, ``*``, ``#``)
    - ``{"hang_up": {}}``
    - ``{"wait_for_hangup": {"timeout": 30}}``

    Raises:
        ScriptError: the data does not have that shape; the message names the step.
    """
    description: object = ""
    if isinstance(data, dict):
        _only_keys(data, {"description", "steps"}, f"script {name!r}")
        raw_steps = data.get("steps")
        description = data.get("description", "")
    else:
        raw_steps = data
    if not isinstance(raw_steps, list) or not raw_steps:
        raise ScriptError(f"script {name!r}: steps must be a non-empty list")
    if not isinstance(description, str):
        raise ScriptError(f"script {name!r}: description must be a string")
    steps = tuple(_parse_step(index, raw) for index, raw in enumerate(raw_steps, 1))
    return CallerScript(steps=steps, name=name, description=description)


def load_caller_script(name_or_path: str | Path) -> CallerScript:
    """A shipped script by name (``caller_demo``) or a script file by path (``*.json``).

    Reads a small file on the calling thread: call it before the call, not in the middle.

    Raises:
        ScriptError: no shipped script has that name, or the file is not a valid script.
        OSError: the file cannot be read.
    """
    text = str(name_or_path)
    if isinstance(name_or_path, Path) or text.endswith(".json") or "/" in text:
        path = Path(name_or_path)
        return _parse_script_text(path.read_text(encoding="utf-8"), name=path.stem)
    shipped = resources.files(_SCRIPTS_PACKAGE).joinpath(_SCRIPTS_DIR, f"{text}.json")
    if not shipped.is_file():
        known = ", ".join(shipped_scripts()) or "none"
        raise ScriptError(f"no caller script named {text!r} (shipped: {known})")
    return _parse_script_text(shipped.read_text(encoding="utf-8"), name=text)


def shipped_scripts() -> list[str]:
    """Names of the caller scripts shipped with Archer."""
    folder = resources.files(_SCRIPTS_PACKAGE).joinpath(_SCRIPTS_DIR)
    return sorted(
        entry.name.removesuffix(".json")
        for entry in folder.iterdir()
        if entry.name.endswith(".json")
    )


def _parse_script_text(text: str, *, name: str) -> CallerScript:
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ScriptError(f"script {name!r} is not JSON: {exc}") from None
    return parse_caller_script(data, name=name)


def _parse_step(index: int, raw: object) -> ScriptStep:
    where = f"step {index}"
    if not isinstance(raw, dict):
        raise ScriptError(f'{where}: must be an object such as {{"say": "caller_balance"}}')
    kinds = [key for key in raw if key in _STEP_KINDS]
    if len(kinds) != 1:
        raise ScriptError(f"{where}: needs exactly one of {', '.join(_STEP_KINDS)}")
    kind = kinds[0]
    where = f"{where} ({kind})"
    value = raw[kind]
    options = {key: item for key, item in raw.items() if key != kind}
    if kind == "press":
        _only_keys(options, {"gap_ms"}, where)
        if not isinstance(value, str) or not value or not set(value) <= KEYPAD:
            raise ScriptError(f"{where}: digits must be a non-empty string of 0-9, * and #")
        return Press(value, _whole(options.get("gap_ms", 300), "gap_ms", where))
    _only_keys(options, set(), where)
    if kind == "say":
        if not isinstance(value, str) or not value:
            raise ScriptError(f"{where}: must name a clip")
        return Say(value)
    if kind == "pause":
        return Pause(_seconds(value, "pause", where, allow_zero=True))
    if not isinstance(value, dict):
        raise ScriptError(f"{where}: must be an object (use {{}} for the defaults)")
    if kind == "hang_up":
        _only_keys(value, set(), where)
        return HangUp()
    if kind == "wait_for_agent":
        _only_keys(value, {"quiet_ms", "timeout"}, where)
        return WaitForAgent(
            quiet_ms=_whole(value.get("quiet_ms", 800), "quiet_ms", where),
            timeout=_seconds(value.get("timeout", 30.0), "timeout", where),
        )
    _only_keys(value, {"timeout"}, where)
    timeout = _seconds(value.get("timeout", 30.0), "timeout", where)
    return (
        WaitForAgentSpeech(timeout) if kind == "wait_for_agent_speech" else WaitForHangup(timeout)
    )


def _only_keys(obj: Mapping[str, object], allowed: set[str], where: str) -> None:
    extra = sorted(set(obj) - allowed)
    if extra:
        raise ScriptError(f"{where}: unknown key {', '.join(extra)}")


def _whole(value: object, key: str, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ScriptError(f"{where}: {key} must be a whole number ≥ 0")
    return value


def _seconds(value: object, key: str, where: str, *, allow_zero: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ScriptError(f"{where}: {key} must be a number of seconds")
    if value < 0 or (value == 0 and not allow_zero):
        raise ScriptError(f"{where}: {key} must be {'≥' if allow_zero else '>'} 0")
    return float(value)


def step_kind(step: ScriptStep) -> str:
    """The step's JSON key (``say``, ``wait_for_agent``, …), for messages."""
    return _KIND_OF[type(step)]


def describe(step: ScriptStep) -> str:
    """The progress line for a step."""
    match step:
        case Say(clip=clip):
            # The shipped clips say known sentences; a test's own clips are shown by name.
            return f"caller says: {clip_text(clip) if clip in CLIP_NAMES else clip}"
        case Press(digits=digits):
            return f"caller presses {digits}"
        case Pause(seconds=seconds):
            return f"caller pauses {seconds:g} s"
        case WaitForAgent():
            return "caller listens until the agent is done"
        case WaitForAgentSpeech():
            return "caller waits for the agent to speak"
        case HangUp():
            return "caller hangs up"
        case WaitForHangup():
            return "caller waits for Archer to end the call"
