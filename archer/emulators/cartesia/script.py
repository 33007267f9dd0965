"""What an emulated Cartesia agent does on a call: a script of steps, loaded from JSON.

Layer: emulator model (pure apart from reading the script file in ``load_agent_script``, which
runs before any session starts). The Cartesia emulator plays a script
(``archer.emulators.cartesia.player``); this module only describes and validates one. Adding a
step: its class and parsing here, how it plays in the player (or, if it belongs to one
protocol, in that protocol's session).

Rules: a script is data, not code. The file is a JSON object ``{"description": "...",
"session_variables": [...], "steps": [...]}``. ``session_variables`` (optional) names what the
agent must be given at session start (Managed ``dynamic_variables``, Line ``start`` metadata):
a session without one of them is refused (Managed: ``missing_dynamic_variables``, as Cartesia
answers a prompt's missing variable; Line: close 1008), and each is a variable the steps may use
as ``{name}``. Each step is an object with exactly one action key:

- ``{"say": "<clip>", "interruptible": true, "text": "..."}``: speak a speech clip
  (``interruptible`` defaults to true, as Cartesia agents are). ``text``, if given, is the words
  the agent says instead of the clip's own (its turn text; ``{var}`` placeholders filled in), as
  a synthesised voice would speak the facts it was given; the audio stays the clip's.
- ``{"listen": {"transcript": "...", "timeout": 20}}``: wait for the caller to speak and hear
  ``transcript``.
- ``{"collect_dtmf": {"digits": 4, "into": "pin", "timeout": 30}}``: collect keyed digits.
- ``{"tool": {"name": "...", "arguments": {...}, "timeout": 30, "into": "result"}}``: call a
  client tool; ``{var}`` in any string argument is replaced by a variable an earlier step stored
  with ``into`` (or a session variable); an argument that is exactly ``"{var:int}"`` becomes the
  variable's value as a JSON integer, as a model passes an id it was given. ``"lead_in":
  "<clip>"`` speaks a clip (not interruptible) right after sending the call and before waiting
  for its result, as an agent asks for a keypad PIN while ``collect_pin`` already runs.
- ``{"dtmf": "5"}``: press keys; ``{"pause": 0.5}``: wait; ``{"hang_up": {"reason": "..."}}``.
- ``{"transfer": {"number": "+15555550199"}}`` or ``{"transfer": {"sip_uri": "sip:desk@pbx"}}``:
  ask the client to transfer the call (Line's ``transfer_call`` event), optionally with
  ``"shape"``: ``destination`` (the default: the Line SDK's ``transfer_destination: {type,
  value}``), ``nested`` (``transfer.target_phone_number``) or ``flat`` (``target_phone_number``).
  The target is sent as written, even when it is not a valid number, so a client's handling of a
  bad target can be exercised. Line only: a managed session playing a script with this step
  fails at its start (managed agents transfer with a tool such as ``transfer_to_human``).

A script plays on either protocol: on Line, ``tool`` steps travel as ``custom`` events (Archer's
convention, the README's "Two Cartesia protocols"), so one script serves both.

Everything is checked on load, so a typo fails before a call, naming the file, the step (from 1)
and the problem. Unknown keys are errors, booleans are not numbers, and a placeholder must name a
session variable or one an earlier step sets (``archer.emulators.cartesia.placeholders``).

Size (over 400 lines, on purpose): the script's format is documented, modelled and checked in
one place, so a step's documentation, its class and its validation are read together.
"""

from __future__ import annotations

import importlib.resources
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Final, TypeGuard

import attrs

from archer.emulators.cartesia.placeholders import placeholders

__all__ = [
    "AgentScript",
    "AgentScriptError",
    "CallTool",
    "CollectDtmf",
    "HangUp",
    "Listen",
    "Pause",
    "Say",
    "SendDtmf",
    "Step",
    "Transfer",
    "bundled_script_names",
    "load_agent_script",
    "parse_agent_script",
    "placeholders",
]

DEFAULT_LISTEN_TIMEOUT: Final = 20.0
DEFAULT_DTMF_TIMEOUT: Final = 30.0
DEFAULT_TOOL_TIMEOUT: Final = 30.0
#: More digits than any PIN or account number a phone menu asks for.
MAX_DTMF_DIGITS: Final = 32
#: The keys an agent can press: both protocols carry ``0``-``9``, ``*``, ``#`` (reference §2).
DTMF_DIGITS: Final = frozenset("0123456789*#")

_SCRIPTS_PACKAGE: Final = "archer.emulators"
_SCRIPTS_DIR: Final = "scripts"
_BUNDLED_NAME: Final = re.compile(r"[A-Za-z0-9_-]+")
_VARIABLE: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
_TOOL_NAME: Final = re.compile(r"[A-Za-z0-9_-]{1,64}")
#: E.164: ``+``, then 2 to 15 digits, the first not 0.
#: How a Line agent may name a transfer target on the wire (see ``Transfer``).
TRANSFER_SHAPES: Final = ("destination", "nested", "flat")
_TRANSFER_KEYS: Final = {"number": "phone", "sip_uri": "sip_uri"}


class AgentScriptError(ValueError):
    """A script file is missing, not JSON, or describes an invalid step."""


@attrs.frozen(slots=True)
class Say:
    """Speak speech clip ``clip``; caller speech stops it when ``interruptible``."""

    clip: str
    interruptible: bool = True
    #: The words said instead of the clip's own (placeholders filled in); None: the clip's.
    text: str | None = None


@attrs.frozen(slots=True)
class Listen:
    """Wait up to ``timeout`` s for the caller to speak; what they say is ``transcript``."""

    transcript: str
    timeout: float = DEFAULT_LISTEN_TIMEOUT


@attrs.frozen(slots=True)
class CollectDtmf:
    """Collect ``digits`` keyed digits into variable ``into`` (waiting up to ``timeout`` s)."""

    digits: int
    into: str
    timeout: float = DEFAULT_DTMF_TIMEOUT


@attrs.frozen(slots=True)
class CallTool:
    """Call client tool ``name`` and wait up to ``timeout`` s for its result."""

    name: str
    arguments: Mapping[str, object]
    into: str | None = None
    timeout: float = DEFAULT_TOOL_TIMEOUT
    #: A clip spoken after the call is sent, while its result is awaited.
    lead_in: str | None = None


@attrs.frozen(slots=True)
class SendDtmf:
    """Press ``digits`` (each of ``0``-``9``, ``*``, ``#``), one ``dtmf_output`` each."""

    digits: str


@attrs.frozen(slots=True)
class Pause:
    """Do nothing for ``seconds``."""

    seconds: float


@attrs.frozen(slots=True)
class HangUp:
    """End the call (close 1000), optionally saying why."""

    reason: str | None = None


@attrs.frozen(slots=True)
class Transfer:
    """Ask the client to transfer the call to ``target`` (a Line ``transfer_call``).

    ``kind`` is ``phone`` or ``sip_uri``; ``shape`` picks one of the three wire shapes agents
    send (``TRANSFER_SHAPES``). ``target`` is not validated: it is what a misbehaving agent says.
    """

    target: str
    kind: str = "phone"
    shape: str = "destination"


Step = Say | Listen | CollectDtmf | CallTool | SendDtmf | Pause | HangUp | Transfer


@attrs.frozen(slots=True)
class AgentScript:
    """A validated script: ``steps`` run in order, once per session."""

    name: str
    steps: tuple[Step, ...]
    description: str = ""
    #: What the session must be given at its start (dynamic variables / start metadata).
    session_variables: tuple[str, ...] = ()

    def clip_names(self) -> frozenset[str]:
        """Every clip a ``say`` step speaks."""
        said = {step.clip for step in self.steps if isinstance(step, Say)}
        led = {s.lead_in for s in self.steps if isinstance(s, CallTool) and s.lead_in is not None}
        return frozenset(said | led)

    def line_only(self) -> bool:
        """Whether a step needs the Line protocol (``transfer``), so managed sessions fail."""
        return any(isinstance(step, Transfer) for step in self.steps)


def bundled_script_names() -> list[str]:
    """The scripts shipped with Archer, by name (for ``load_agent_script``)."""
    folder = importlib.resources.files(_SCRIPTS_PACKAGE) / _SCRIPTS_DIR
    return sorted(
        entry.name.removesuffix(".json")
        for entry in folder.iterdir()
        if entry.name.endswith(".json")
    )


def load_agent_script(name_or_path: str) -> AgentScript:
    """Load a shipped script by name (``bank_demo``) or any script file by path.

    A bare name (letters, digits, ``_``, ``-``) is a shipped script; anything else is a path.

    Raises:
        AgentScriptError: no such script or file, not JSON, or an invalid step.
    """
    if _BUNDLED_NAME.fullmatch(name_or_path):
        resource = importlib.resources.files(_SCRIPTS_PACKAGE) / _SCRIPTS_DIR
        resource = resource / f"{name_or_path}.json"
        if not resource.is_file():
            known = ", ".join(bundled_script_names())
            raise AgentScriptError(f"no agent script named {name_or_path!r}; shipped: {known}")
        text = resource.read_text(encoding="utf-8")
        name, source = name_or_path, f"agent script {name_or_path!r}"
    else:
        path = Path(name_or_path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise AgentScriptError(f"cannot read agent script {path}: {exc}") from None
        name, source = path.stem, str(path)
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise AgentScriptError(f"{source}: not valid JSON: {exc}") from None
    return parse_agent_script(data, name=name, source=source)


def parse_agent_script(data: object, *, name: str, source: str = "agent script") -> AgentScript:
    """Validate decoded JSON ``data`` as a script called ``name``.

    Raises:
        AgentScriptError: the first problem found, prefixed with ``source`` and the step.
    """
    if not isinstance(data, dict):
        raise AgentScriptError(f"{source}: must be a JSON object with a 'steps' list")
    _no_other_keys(data, {"description", "session_variables", "steps"}, source)
    description = data.get("description", "")
    if not isinstance(description, str):
        raise AgentScriptError(f"{source}: 'description' must be a string")
    given = data.get("session_variables", [])
    if not isinstance(given, list) or not all(
        isinstance(v, str) and _VARIABLE.fullmatch(v) for v in given
    ):
        raise AgentScriptError(f"{source}: 'session_variables' must be a list of variable names")
    raw_steps = data.get("steps")
    if not isinstance(raw_steps, list) or not raw_steps:
        raise AgentScriptError(f"{source}: 'steps' must be a non-empty list")
    variables: set[str] = set(given)
    steps: list[Step] = []
    for number, raw in enumerate(raw_steps, start=1):
        where = f"{source}: step {number}"
        step = _parse_step(raw, where)
        used = (
            placeholders(step.arguments)
            if isinstance(step, CallTool)
            else placeholders(step.text)
            if isinstance(step, Say)
            else set()
        )
        for variable in sorted(used - variables):
            raise AgentScriptError(
                f"{where}: placeholder {{{variable}}} names no session variable and no "
                f"variable an earlier step sets with 'into'"
            )
        if isinstance(step, CollectDtmf | CallTool) and step.into is not None:
            variables.add(step.into)
        steps.append(step)
    return AgentScript(
        name=name, steps=tuple(steps), description=description, session_variables=tuple(given)
    )


# --------------------------------------------------------------------------------------------
# Steps
# --------------------------------------------------------------------------------------------

_ACTIONS: Final = (
    "say",
    "listen",
    "collect_dtmf",
    "tool",
    "dtmf",
    "pause",
    "hang_up",
    "transfer",
)


def _parse_step(raw: object, where: str) -> Step:
    if not isinstance(raw, dict):
        raise AgentScriptError(f"{where}: must be an object with one of {', '.join(_ACTIONS)}")
    actions = [key for key in raw if key in _ACTIONS]
    if len(actions) != 1:
        found = ", ".join(actions) or "none"
        raise AgentScriptError(
            f"{where}: needs exactly one of {', '.join(_ACTIONS)} (found {found})"
        )
    action = actions[0]
    where = f"{where} ({action})"
    _no_other_keys(raw, {action, "interruptible", "text"} if action == "say" else {action}, where)
    value = raw[action]
    if action == "say":
        interruptible = raw.get("interruptible", True)
        if not isinstance(interruptible, bool):
            raise AgentScriptError(f"{where}: 'interruptible' must be true or false")
        text = raw.get("text")
        return Say(
            clip=_nonempty_text(value, "the clip name", where),
            interruptible=interruptible,
            text=None if text is None else _nonempty_text(text, "'text'", where),
        )
    if action == "listen":
        fields = _fields(value, {"transcript", "timeout"}, where)
        return Listen(
            transcript=_nonempty_text(fields.get("transcript"), "'transcript'", where),
            timeout=_timeout(fields, DEFAULT_LISTEN_TIMEOUT, where),
        )
    if action == "collect_dtmf":
        fields = _fields(value, {"digits", "into", "timeout"}, where)
        digits = fields.get("digits")
        if not _is_integer(digits) or not 1 <= digits <= MAX_DTMF_DIGITS:
            raise AgentScriptError(f"{where}: 'digits' must be an integer from 1 to 32")
        return CollectDtmf(
            digits=digits,
            into=_variable(fields.get("into"), where),
            timeout=_timeout(fields, DEFAULT_DTMF_TIMEOUT, where),
        )
    if action == "tool":
        return _parse_tool(value, where)
    if action == "dtmf":
        if not isinstance(value, str) or not value or not set(value) <= DTMF_DIGITS:
            raise AgentScriptError(f"{where}: must be a string of 0-9, * and # keys")
        return SendDtmf(digits=value)
    if action == "pause":
        if not _is_number(value) or not 0 <= value <= 3600:
            raise AgentScriptError(f"{where}: must be a number of seconds from 0 to 3600")
        return Pause(seconds=float(value))
    if action == "transfer":
        return _parse_transfer(value, where)
    fields = _fields(value, {"reason"}, where)
    reason = fields.get("reason")
    if reason is not None and not isinstance(reason, str):
        raise AgentScriptError(f"{where}: 'reason' must be a string")
    return HangUp(reason=reason or None)


def _parse_transfer(value: object, where: str) -> Transfer:
    fields = _fields(value, {"number", "sip_uri", "shape"}, where)
    targets = [(kind, fields[key]) for key, kind in _TRANSFER_KEYS.items() if key in fields]
    if len(targets) != 1:
        raise AgentScriptError(f"{where}: needs exactly one of 'number' or 'sip_uri'")
    kind, target = targets[0]
    if not isinstance(target, str) or not 1 <= len(target) <= 300:
        raise AgentScriptError(f"{where}: the target must be text of 1 to 300 characters")
    shape = fields.get("shape", "destination")
    if shape not in TRANSFER_SHAPES or (kind == "sip_uri" and shape != "destination"):
        raise AgentScriptError(
            f"{where}: 'shape' must be one of {', '.join(TRANSFER_SHAPES)}"
            " (a SIP URI only travels as a destination)"
        )
    return Transfer(target=target, kind=kind, shape=shape)


def _parse_tool(value: object, where: str) -> CallTool:
    fields = _fields(value, {"name", "arguments", "timeout", "into", "lead_in"}, where)
    name = fields.get("name")
    if not isinstance(name, str) or not _TOOL_NAME.fullmatch(name):
        raise AgentScriptError(f"{where}: 'name' must be 1-64 of [A-Za-z0-9_-]")
    arguments = fields.get("arguments", {})
    if not isinstance(arguments, dict):
        raise AgentScriptError(f"{where}: 'arguments' must be an object")
    into = fields.get("into")
    lead_in = fields.get("lead_in")
    if lead_in is not None:
        lead_in = _nonempty_text(lead_in, "'lead_in'", where)
    return CallTool(
        lead_in=lead_in,
        name=name,
        arguments=arguments,
        into=None if into is None else _variable(into, where),
        timeout=_timeout(fields, DEFAULT_TOOL_TIMEOUT, where),
    )


# --------------------------------------------------------------------------------------------
# Field checks
# --------------------------------------------------------------------------------------------


def _no_other_keys(obj: Mapping[str, object], allowed: set[str], where: str) -> None:
    unknown = sorted(set(obj) - allowed)
    if unknown:
        raise AgentScriptError(f"{where}: unknown key {unknown[0]!r}")


def _fields(value: object, allowed: set[str], where: str) -> dict[str, object]:
    if not isinstance(value, dict):
        raise AgentScriptError(f"{where}: must be an object")
    _no_other_keys(value, allowed, where)
    return value


def _nonempty_text(value: object, what: str, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise AgentScriptError(f"{where}: {what} must be a non-empty string")
    return value


def _variable(value: object, where: str) -> str:
    if not isinstance(value, str) or not _VARIABLE.fullmatch(value):
        raise AgentScriptError(f"{where}: 'into' must be a variable name ([A-Za-z_][A-Za-z0-9_]*)")
    return value


def _timeout(fields: Mapping[str, object], default: float, where: str) -> float:
    value = fields.get("timeout", default)
    if not _is_number(value) or not 0 < value <= 3600:
        raise AgentScriptError(f"{where}: 'timeout' must be a number of seconds, over 0, to 3600")
    return float(value)


def _is_number(value: object) -> TypeGuard[int | float]:
    # JSON true is not a number, although Python's bool is an int.
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_integer(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)
