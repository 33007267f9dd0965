"""Settings: one frozen object built once from the environment (and ``.env``), passed explicitly.

Layer: configuration; pure (no I/O beyond reading the ``.env`` file in ``load_environ``).

Rules: ``Settings.from_environ`` is the only place that knows variable names; nothing else reads
``os.environ``. Every malformed value is a ``ConfigError`` whose line names the variable, and all
of them are reported together (``SettingsError.problems``). Each command checks only what it
uses: it names the ``GROUPS`` it reads and the variables it ``requires``; ``archer serve`` checks
everything. A required variable still holding ``.env.example``'s placeholder is refused as such.
``.env`` is read by python-dotenv's rules (the parser people know). Secrets are ``repr=False`` so
they never reach a log line or a traceback.

Size (over 400 lines, on purpose): the rule above — one place knows every variable name — makes
this module the list of Archer's settings; ``Settings.from_environ`` reads them in one pass so
every problem is reported at once, and the reader and value checks below exist only for it.
"""

from __future__ import annotations

import io
import os
import re
import secrets
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import Final, Self, TypeVar
from urllib.parse import urlsplit

import attrs
from dotenv import dotenv_values
from dotenv.parser import parse_stream

from archer.call.outbound import CallingWindow, parse_window, parse_zone
from archer.errors import ConfigError, SettingsError

AUDIO_FORMATS: Final = ("mulaw_8000", "pcm_16000", "pcm_24000", "pcm_44100")
PROTOCOLS: Final = ("managed", "line")
LOG_FORMATS: Final = ("json", "console")
RESAMPLE_QUALITIES: Final = ("qq", "lq", "mq", "hq", "vhq")
LOG_LEVELS: Final = ("debug", "info", "warning", "error")
#: OUTBOUND_VOICEMAIL_MESSAGE's default: no amount, no merchant, no account details.
DEFAULT_VOICEMAIL_MESSAGE: Final = (
    "Hello, this is a message from your bank's fraud team. Please call the number on the back"
    " of your card as soon as you can. Thank you."
)
PIN_ENTRY_MODES: Final = ("keypad", "agent", "both")

#: Variables ``archer serve`` cannot run without (the rest have defaults).
REQUIRED_FOR_SERVING: Final = (
    "WEBHOOK_BASE_URL",
    "TWILIO_ACCOUNT_SID",
    "TWILIO_AUTH_TOKEN",
    "CARTESIA_API_KEY",
    "CARTESIA_AGENT_ID",
)

#: Required variables, by the commands that need them (``from_environ(requires=...)``).
REQUIRED_FOR_TWILIO_EMULATOR: Final = (
    "WEBHOOK_BASE_URL",
    "TWILIO_ACCOUNT_SID",
    "TWILIO_AUTH_TOKEN",
)
REQUIRED_FOR_CARTESIA_EMULATOR: Final = ("CARTESIA_API_KEY",)

#: The settings each part of Archer reads, so a command checks only the groups it uses
#: (``from_environ(groups=...)``). ``groups=None`` (``archer serve``, and the default) checks
#: every variable, also one listed in no group; a new setting belongs in the group that reads it.
GROUPS: Final[Mapping[str, frozenset[str]]] = {
    "database": frozenset({"DATABASE_URL", "DB_POOL_SIZE"}),
    "logs": frozenset({"LOG_LEVEL", "LOG_FORMAT"}),
    "spool": frozenset({"SPOOL_PATH", "SPOOL_REPLAY_INTERVAL"}),
    "server": frozenset(
        {
            "ARCHER_HOST",
            "ARCHER_PORT",
            "PORT",
            "MEDIA_PORT",
            "ARCHER_WORKERS",
            "DRAIN_TIMEOUT",
            "MAX_ACTIVE_CALLS",
            "OVERFLOW_NUMBER",
            "INSTANCE_ID",
            "INSTANCE_LEASE_SECONDS",
            "INSTANCE_HEARTBEAT_SECONDS",
            "REAPER_INTERVAL",
        }
    ),
    "twilio": frozenset(
        {
            "WEBHOOK_BASE_URL",
            "TWILIO_ACCOUNT_SID",
            "TWILIO_AUTH_TOKEN",
            "TWILIO_API_BASE_URL",
            "TWILIO_VALIDATE_SIGNATURES",
            "TWILIO_SHARED_KEYS",
            "TWILIO_START_TIMEOUT",
            "TWILIO_MEDIA_TIMEOUT",
            "STREAM_TOKEN_TTL",
        }
    ),
    "cartesia": frozenset(
        {
            "CARTESIA_API_KEY",
            "CARTESIA_AGENT_ID",
            "CARTESIA_WS_URL",
            "CARTESIA_MANAGED_VERSION",
            "CARTESIA_LINE_VERSION",
            "CARTESIA_PROTOCOL",
            "CARTESIA_AUDIO_FORMAT",
            "CARTESIA_VOICE_ID",
            "CARTESIA_LINE_OUTPUT_FORMAT",
            "CARTESIA_LINE_INTRODUCTION",
            "CARTESIA_LINE_SYSTEM_PROMPT",
            "RESAMPLE_QUALITY",
            "AGENT_AUDIO_BATCH_MS",
            "AGENT_READY_TIMEOUT",
            "AGENT_PING_INTERVAL",
            # --- reconnect (issue 16): archer.call.reconnect ---
            "AGENT_RECONNECT_ATTEMPTS",
            "AGENT_RECONNECT_WINDOW",
            "AGENT_RESUME_VARIABLES",
        }
    ),
    "calls": frozenset(
        {
            "HUMAN_AGENT_NUMBER",
            "TRANSFER_ALLOWLIST",
            "MAX_CALL_SECONDS",
            "TOOL_TIMEOUT",
            "FLUSH_TIMEOUT",
            "MAX_MESSAGE_BYTES",
            "PIN_MAX_FAILURES",
            "PIN_LOCKOUT_SECONDS",
            # Keypad PIN entry (issue 21).
            "PIN_ENTRY",
            "DTMF_TO_AGENT",
            "PIN_MAX_DIGITS",
            "PIN_DIGIT_TIMEOUT",
            "PIN_ENTRY_TIMEOUT",
            # Call recordings (issue 21).
            "RECORDING",
            "RECORDING_NOTICE",
            "RECORDING_PAUSE_BEHAVIOR",
        }
    ),
    # --- outbound calls (issue 22): the queue, its pace and window, the voicemail ---
    "outbound": frozenset(
        {
            "OUTBOUND_FROM_NUMBER",
            "OUTBOUND_CPS",
            "OUTBOUND_MAX_ACTIVE",
            "OUTBOUND_WINDOW",
            "OUTBOUND_TIMEZONE",
            "OUTBOUND_RING_TIMEOUT",
            "OUTBOUND_RETRY_DELAY",
            "OUTBOUND_MAX_ATTEMPTS",
            "OUTBOUND_VOICEMAIL_MESSAGE",
        }
    ),
}

_T = TypeVar("_T")
#: Instance ids name spool files and label log lines: a short, path-safe word.
_INSTANCE_ID: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
_VARIABLE_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
_E164: Final = re.compile(r"\+[1-9][0-9]{6,14}")
_SIP_URI: Final = re.compile(r"sips?:[^\s<>\"',]{1,250}", re.IGNORECASE)
_ACCOUNT_SID: Final = re.compile(r"AC[0-9a-fA-F]{32}")
#: ``.env.example``'s stand-ins: ``ACxxxx…`` and hosts under the documentation domains (RFC 2606).
_PLACEHOLDER_TEXT: Final = re.compile(r"x{8,}", re.IGNORECASE)
_PLACEHOLDER_HOST: Final = re.compile(r"(.+\.)?example\.(com|net|org)", re.IGNORECASE)
_URL_PASSWORD: Final = re.compile(r"(://[^:/@]*:)[^@]*@")


@attrs.frozen(kw_only=True)
class CallLimits:
    """Deadlines and bounds that apply to every call (seconds unless named otherwise)."""

    #: Twilio must send ``connected`` and ``start`` within this after the upgrade.
    twilio_start_timeout: float = 10.0
    #: A call whose Twilio stream sends nothing for this long is over (``twilio_lost``): Twilio
    #: sends a media frame every 20 ms, even in silence.
    twilio_media_timeout: float = 5.0
    #: The agent must answer ``session_create`` with ``session_ready`` within this.
    agent_ready_timeout: float = 10.0
    #: A call is cut off after this long, whatever is happening.
    max_call_seconds: float = 3600.0
    #: The final flush of the call record gets this long before it goes to the spool.
    flush_timeout: float = 5.0
    #: A one-time stream token is valid this long after the webhook answered.
    stream_token_ttl: float = 60.0
    #: Each tool invocation gets this long before it becomes an ``is_error`` result.
    tool_timeout: float = 8.0
    #: WebSocket ping to the agent this often; a missing pong within the same time fails the call.
    agent_ping_interval: float = 20.0
    #: Largest WebSocket message accepted from either peer, in bytes.
    max_message_bytes: int = 256 * 1024


@attrs.frozen(kw_only=True)
class Settings:
    """Everything Archer reads from its environment, parsed and checked."""

    database_url: str = attrs.field(default="sqlite:///archer.db", repr=False)
    webhook_base_url: str = ""
    twilio_account_sid: str = ""
    twilio_auth_token: str = attrs.field(default="", repr=False)
    twilio_api_base_url: str = "https://api.twilio.com"
    twilio_validate_signatures: bool = True
    #: SharedKey secrets by key id: Twilio names the key that signed a request in
    #: ``X-Twilio-Webhooks-Signature-Settings``; several at once let a key be rotated.
    twilio_shared_keys: Mapping[str, str] = attrs.field(factory=dict, repr=False)
    cartesia_api_key: str = attrs.field(default="", repr=False)
    cartesia_agent_id: str = ""
    cartesia_ws_url: str = "wss://api.cartesia.ai"
    #: The API version each protocol is pinned to (Cartesia's docs, ../shared/reference
    #: cartesia-agents.md §1.3): Managed Agents and the Line Calls API date theirs apart.
    cartesia_managed_version: str = "2026-08-14"
    cartesia_line_version: str = "2026-03-01"
    cartesia_protocol: str = "managed"
    cartesia_audio_format: str = "mulaw_8000"
    cartesia_voice_id: str = ""
    #: Line agents only: the format ``media_output`` arrives in ("" means the input format).
    cartesia_line_output_format: str = ""
    #: Line agents only: optional overrides sent in ``start`` (the agent's code must read them).
    cartesia_line_introduction: str = ""
    cartesia_line_system_prompt: str = ""
    #: Numbers (E.164) and SIP URIs an agent may transfer to by name (Line's transfer_call);
    #: others go to HUMAN_AGENT_NUMBER.
    transfer_allowlist: frozenset[str] = frozenset()
    #: soxr quality for PCM agent formats (see bench/resample_quality.py for the trade-off).
    resample_quality: str = "HQ"
    #: Caller audio per message to the agent: 20 (each frame as it comes) or 40 ms (two
    #: frames joined: half the agent-leg messages, 20 ms more latency).
    agent_audio_batch_ms: int = 20
    human_agent_number: str = ""
    # --- PIN lock-out (issue 19): failures counted per customer in the database ---
    #: Failed PIN verifications (across calls and instances) that lock verification...
    pin_max_failures: int = 5
    #: ...within this many seconds; the lock then lasts as long.
    pin_lockout_seconds: float = 900.0
    # --- Keypad PIN entry (issue 21): Archer collects the PIN, the agent learns only the outcome
    #: ``keypad`` (only ``collect_pin``; ``verify_caller`` refused), ``agent`` (only the agent's
    #: ``verify_caller(pin)``) or ``both``.
    pin_entry: str = "keypad"
    #: Keypad keys outside a keypad capture reach the agent; off (the default), they are
    #: dropped and counted, so no key the caller presses ever reaches the agent, and caller
    #: frames carrying a keypad tone reach it as silence (``archer.audio.tone_gate``).
    dtmf_to_agent: bool = False
    #: A keypad entry ends at this many digits...
    pin_max_digits: int = 8
    #: ...or this many seconds after the last key...
    pin_digit_timeout: float = 5.0
    #: ...or this many seconds after the capture began, whatever happens.
    pin_entry_timeout: float = 30.0
    # --- Call recordings (issue 21) ---
    #: ``off``, or ``dual``: Twilio records every bridged call in two channels (caller, agent).
    recording: str = "off"
    #: Said to the caller (``<Say>``) after the recording starts and before the agent, if set.
    recording_notice: str = ""
    #: While a keypad PIN entry pauses the recording: ``skip`` (the pause is cut out) or
    #: ``silence`` (it is kept as silence, so the recording's times match the call's).
    recording_pause_behavior: str = "skip"
    log_level: str = "info"
    log_format: str = "json"
    host: str = "0.0.0.0"
    port: int = 8000
    #: The dedicated media listener's port (``archer.web.media_listener``); 0 serves media
    #: streams on ``port`` through the quart-trio route only.
    media_port: int = 0
    #: ``archer serve`` worker processes sharing the listening socket (``--workers`` overrides).
    workers: int = 1
    db_pool_size: int = 5
    #: Seconds live calls get after SIGTERM; by default as long as the longest call can still
    #: run (``default_drain_timeout``), so a deploy cuts no call.
    drain_timeout: float = 3670.0
    # --- capacity: MAX_ACTIVE_CALLS (archer.web.capacity) ---
    #: Calls this process carries at once; at the cap /readyz answers 503 and a webhook that
    #: still arrives gets the overflow TwiML (``archer.web.capacity``).
    max_active_calls: int = 50
    #: Where a call that finds the process full is sent (E.164); "" : a short apology instead.
    overflow_number: str = ""
    #: Records the database did not take wait here (one file per process) until replayed.
    spool_path: str = "spool/calls.jsonl"
    spool_replay_interval: float = 30.0
    limits: CallLimits = attrs.Factory(CallLimits)
    # --- reconnect (issue 16): archer.call.reconnect ---
    #: New agent sessions a call may open after its agent failed (or its first connect did);
    #: 0 turns reconnecting off (a failure ends the call as before, e.g. ``agent_error``).
    agent_reconnect_attempts: int = 3
    #: ...all within this many seconds of the failure; then the caller goes to a person.
    agent_reconnect_window: float = 15.0
    #: Extra dynamic variables (Line: start metadata) sent to a session that replaces a failed
    #: one, so its prompt can say it resumes; empty by default, as the agent must declare them.
    agent_resume_variables: Mapping[str, str] = attrs.field(factory=dict)
    # --- instances: leases and the reaper (archer.db.instances) ---
    #: This process's name in the ``instances`` table, on its calls and in its spool file name.
    instance_id: str = attrs.Factory(lambda: default_instance_id())
    #: A lease not renewed for this long is expired: its calls are finished by a reaper.
    instance_lease_seconds: float = 15.0
    instance_heartbeat_seconds: float = 5.0
    reaper_interval: float = 10.0
    # --- outbound calls (archer.db.outbound; issue 22) ---
    #: The number Archer rings customers from (E.164, a Twilio number of the account).
    outbound_from_number: str = ""
    #: Calls API requests per second, across every instance (Twilio's default limit is 1).
    outbound_cps: float = 1.0
    #: Outbound calls dialing or in progress at once, across every instance.
    outbound_max_active: int = 5
    #: Local hours in which customers may be rung (``HH:MM-HH:MM`` in ``outbound_timezone``).
    outbound_window: str = "08:00-21:00"
    outbound_timezone: str = "UTC"
    #: Seconds Twilio lets the callee's phone ring before the attempt is a no-answer.
    outbound_ring_timeout: int = 30
    #: Seconds before a no-answer, busy or failed attempt is tried again ...
    outbound_retry_delay: float = 300.0
    #: ... up to this many attempts in all.
    outbound_max_attempts: int = 3
    #: What a voicemail hears: nothing about the payment, the merchant or the account.
    outbound_voicemail_message: str = DEFAULT_VOICEMAIL_MESSAGE

    def calling_window(self) -> CallingWindow:
        """``OUTBOUND_WINDOW`` in ``OUTBOUND_TIMEZONE`` (both checked when settings were built)."""
        return parse_window(self.outbound_window, parse_zone(self.outbound_timezone))

    @classmethod
    def from_environ(
        cls,
        environ: Mapping[str, str],
        *,
        groups: Collection[str] | None = None,
        requires: Collection[str] = (),
    ) -> Self:
        """Build settings from a mapping of environment variables.

        Checks the variables of ``groups`` (names in ``GROUPS``; ``None``: every variable) and
        that each of ``requires`` is set to a real value (not a placeholder). A variable outside
        what is checked falls back to its default when malformed: the command does not use it.

        Raises:
            SettingsError: every problem found, one line each naming its variable.
        """
        env = _Reader(environ)
        limits = CallLimits(
            twilio_start_timeout=env.number("TWILIO_START_TIMEOUT", 10.0),
            twilio_media_timeout=env.number("TWILIO_MEDIA_TIMEOUT", 5.0),
            agent_ready_timeout=env.number("AGENT_READY_TIMEOUT", 10.0),
            max_call_seconds=env.number("MAX_CALL_SECONDS", 3600.0),
            flush_timeout=env.number("FLUSH_TIMEOUT", 5.0),
            stream_token_ttl=env.number("STREAM_TOKEN_TTL", 60.0),
            tool_timeout=env.number("TOOL_TIMEOUT", 8.0),
            agent_ping_interval=env.number("AGENT_PING_INTERVAL", 20.0),
            max_message_bytes=env.integer("MAX_MESSAGE_BYTES", 256 * 1024, minimum=4096),
        )
        settings = cls(
            database_url=env.text("DATABASE_URL", "sqlite:///archer.db", check=_database_url),
            webhook_base_url=env.text("WEBHOOK_BASE_URL", "", check=_base_url).rstrip("/"),
            twilio_account_sid=env.text("TWILIO_ACCOUNT_SID", "", check=_account_sid),
            twilio_auth_token=env.text("TWILIO_AUTH_TOKEN", ""),
            twilio_api_base_url=env.text(
                "TWILIO_API_BASE_URL", "https://api.twilio.com", check=_http_url
            ).rstrip("/"),
            twilio_validate_signatures=env.boolean("TWILIO_VALIDATE_SIGNATURES", True),
            twilio_shared_keys=env.secrets_by_id("TWILIO_SHARED_KEYS"),
            cartesia_api_key=env.text("CARTESIA_API_KEY", ""),
            cartesia_agent_id=env.text("CARTESIA_AGENT_ID", ""),
            cartesia_ws_url=env.text(
                "CARTESIA_WS_URL", "wss://api.cartesia.ai", check=_ws_url
            ).rstrip("/"),
            cartesia_managed_version=env.text("CARTESIA_MANAGED_VERSION", "2026-08-14"),
            cartesia_line_version=env.text("CARTESIA_LINE_VERSION", "2026-03-01"),
            cartesia_protocol=env.choice("CARTESIA_PROTOCOL", "managed", PROTOCOLS),
            cartesia_audio_format=env.choice("CARTESIA_AUDIO_FORMAT", "mulaw_8000", AUDIO_FORMATS),
            cartesia_voice_id=env.text("CARTESIA_VOICE_ID", ""),
            cartesia_line_output_format=env.choice(
                "CARTESIA_LINE_OUTPUT_FORMAT", "", ("", *AUDIO_FORMATS)
            ),
            cartesia_line_introduction=env.text("CARTESIA_LINE_INTRODUCTION", ""),
            cartesia_line_system_prompt=env.text("CARTESIA_LINE_SYSTEM_PROMPT", ""),
            transfer_allowlist=env.numbers("TRANSFER_ALLOWLIST", sip=True),
            resample_quality=env.choice("RESAMPLE_QUALITY", "hq", RESAMPLE_QUALITIES).upper(),
            agent_audio_batch_ms=int(env.choice("AGENT_AUDIO_BATCH_MS", "20", ("20", "40"))),
            human_agent_number=env.text("HUMAN_AGENT_NUMBER", "", check=_e164),
            pin_max_failures=env.integer("PIN_MAX_FAILURES", 5, minimum=1),
            pin_lockout_seconds=env.number("PIN_LOCKOUT_SECONDS", 900.0),
            pin_entry=env.choice("PIN_ENTRY", "keypad", PIN_ENTRY_MODES),
            dtmf_to_agent=env.boolean("DTMF_TO_AGENT", False),
            pin_max_digits=env.integer("PIN_MAX_DIGITS", 8, minimum=4, maximum=8),
            pin_digit_timeout=env.number("PIN_DIGIT_TIMEOUT", 5.0),
            pin_entry_timeout=env.number("PIN_ENTRY_TIMEOUT", 30.0),
            recording=env.choice("RECORDING", "off", ("off", "dual")),
            recording_notice=env.text("RECORDING_NOTICE", ""),
            recording_pause_behavior=env.choice(
                "RECORDING_PAUSE_BEHAVIOR", "skip", ("skip", "silence")
            ),
            log_level=env.choice("LOG_LEVEL", "info", LOG_LEVELS),
            log_format=env.choice("LOG_FORMAT", "json", LOG_FORMATS),
            host=env.text("ARCHER_HOST", "0.0.0.0"),
            # ARCHER_PORT wins; PORT is honoured as most platforms set it.
            port=env.integer(
                "ARCHER_PORT", env.integer("PORT", 8000, maximum=65535), maximum=65535
            ),
            media_port=env.integer("MEDIA_PORT", 0, maximum=65535),
            workers=env.integer("ARCHER_WORKERS", 1, minimum=1),
            db_pool_size=env.integer("DB_POOL_SIZE", 5, minimum=1),
            drain_timeout=env.number("DRAIN_TIMEOUT", default_drain_timeout(limits)),
            # --- capacity ---
            max_active_calls=env.integer("MAX_ACTIVE_CALLS", 50, minimum=1),
            overflow_number=env.text("OVERFLOW_NUMBER", "", check=_e164),
            spool_path=env.text("SPOOL_PATH", "spool/calls.jsonl"),
            spool_replay_interval=env.number("SPOOL_REPLAY_INTERVAL", 30.0),
            limits=limits,
            # --- reconnect ---
            agent_reconnect_attempts=env.integer("AGENT_RECONNECT_ATTEMPTS", 3, minimum=0),
            agent_reconnect_window=env.number("AGENT_RECONNECT_WINDOW", 15.0),
            agent_resume_variables=env.variables("AGENT_RESUME_VARIABLES"),
            # --- instances: leases and the reaper ---
            instance_id=env.text("INSTANCE_ID", "", check=_instance_id) or default_instance_id(),
            instance_lease_seconds=env.number("INSTANCE_LEASE_SECONDS", 15.0),
            instance_heartbeat_seconds=env.number("INSTANCE_HEARTBEAT_SECONDS", 5.0),
            reaper_interval=env.number("REAPER_INTERVAL", 10.0),
            # --- outbound calls ---
            outbound_from_number=env.text("OUTBOUND_FROM_NUMBER", "", check=_e164),
            outbound_cps=env.number("OUTBOUND_CPS", 1.0),
            outbound_max_active=env.integer("OUTBOUND_MAX_ACTIVE", 5, minimum=1),
            outbound_window=env.text("OUTBOUND_WINDOW", "08:00-21:00", check=_window),
            outbound_timezone=env.text("OUTBOUND_TIMEZONE", "UTC", check=_zone),
            outbound_ring_timeout=env.integer("OUTBOUND_RING_TIMEOUT", 30, minimum=5, maximum=600),
            outbound_retry_delay=env.number("OUTBOUND_RETRY_DELAY", 300.0),
            outbound_max_attempts=env.integer("OUTBOUND_MAX_ATTEMPTS", 3, minimum=1),
            outbound_voicemail_message=env.text(
                "OUTBOUND_VOICEMAIL_MESSAGE", DEFAULT_VOICEMAIL_MESSAGE
            ),
        )
        checked = None if groups is None else frozenset().union(*(GROUPS[g] for g in groups))
        problems = [
            problem
            for name, problem in env.problems.items()
            if checked is None or name in checked or name in requires
        ]
        problems += env.requirement_problems(requires)
        if "CARTESIA_VERSION" in environ and (groups is None or "cartesia" in groups):
            # Retired (issue 16). One date cannot be right for both protocols: guessing which
            # one it meant would pin the other to a version it may not speak.
            problems.append(
                "CARTESIA_VERSION is retired: set CARTESIA_MANAGED_VERSION (Managed Agents) or"
                " CARTESIA_LINE_VERSION (Line) instead, or remove it to use their defaults"
            )
        if problems:
            raise SettingsError(problems)
        return settings

    def check_serving(self) -> None:
        """Raise ``SettingsError`` naming every variable ``archer serve`` needs but lacks.

        (The CLI asks ``from_environ(requires=REQUIRED_FOR_SERVING)``, which also refuses
        placeholders; this checks a ``Settings`` built some other way.)
        """
        present = {
            "WEBHOOK_BASE_URL": self.webhook_base_url,
            "TWILIO_ACCOUNT_SID": self.twilio_account_sid,
            "TWILIO_AUTH_TOKEN": self.twilio_auth_token,
            "CARTESIA_API_KEY": self.cartesia_api_key,
            "CARTESIA_AGENT_ID": self.cartesia_agent_id,
        }
        missing = [_not_set(name) for name in REQUIRED_FOR_SERVING if not present[name]]
        if missing:
            raise SettingsError(missing)

    @property
    def agent_output_format(self) -> str:
        """The format agent audio arrives in (Managed agents: always their input format)."""
        if self.cartesia_protocol == "line" and self.cartesia_line_output_format:
            return self.cartesia_line_output_format
        return self.cartesia_audio_format

    @property
    def public_host(self) -> str:
        """Host (and port, if any) of ``WEBHOOK_BASE_URL``, as Twilio reaches it."""
        return urlsplit(self.webhook_base_url).netloc

    @property
    def media_stream_url(self) -> str:
        """The public ``wss://`` URL Twilio dials for the media stream."""
        return f"wss://{self.public_host}/ws/cartesia"


def default_drain_timeout(limits: CallLimits) -> float:
    """``DRAIN_TIMEOUT`` when unset: the longest a call answered just before SIGTERM may run.

    Its stream may arrive up to ``STREAM_TOKEN_TTL`` after the webhook (plus
    ``TWILIO_START_TIMEOUT`` for ``start``) and then lasts at most ``MAX_CALL_SECONDS``: with
    the defaults 60 + 10 + 3600 = 3670 s. A drain this long cuts no call at a deploy.
    """
    return limits.stream_token_ttl + limits.twilio_start_timeout + limits.max_call_seconds


def load_environ(environ: Mapping[str, str], dotenv: Path = Path(".env")) -> dict[str, str]:
    """Merge ``.env`` (if present) under the real environment; the environment wins.

    Raises:
        ConfigError: ``.env`` cannot be read or has a line that is not a setting.
    """
    merged: dict[str, str] = {}
    if dotenv.is_file():
        try:
            text = dotenv.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{dotenv}: cannot read it ({exc}); fix or remove it") from None
        merged.update(parse_dotenv(text, source=str(dotenv)))
    merged.update(environ)
    return merged


def parse_dotenv(text: str, *, source: str = ".env") -> dict[str, str]:
    """Parse ``.env`` text by python-dotenv's rules: ``KEY=value``, ``export``, quotes, comments.

    Values may refer to earlier ones or the environment as ``${NAME}``, as python-dotenv and
    docker compose expand them.

    Raises:
        ConfigError: a line is not a setting (python-dotenv would skip it with a warning; a
            setting silently lost is worse than a clear stop), naming ``source`` and the line.
    """
    for binding in parse_stream(io.StringIO(text)):
        if binding.error:
            line = binding.original.line
            shown = binding.original.string.strip().splitlines()[0][:60]
            raise ConfigError(
                f"{source} line {line} is not KEY=value ({shown!r}); fix it or start it with #"
            )
    values = dotenv_values(stream=io.StringIO(text))
    return {key: value for key, value in values.items() if value is not None}


@attrs.frozen
class _Reader:
    """Typed access to environment variables; every error names its variable."""

    environ: Mapping[str, str]
    #: The first problem with each variable, by name (the reader carries on with the default).
    problems: dict[str, str] = attrs.field(factory=dict)

    def _problem(self, name: str, message: str, default: _T) -> _T:
        self.problems.setdefault(name, message)
        return default

    def requirement_problems(self, names: Collection[str]) -> list[str]:
        """A line for each of ``names`` that is unset or still ``.env.example``'s placeholder."""
        found: list[str] = []
        for name in names:
            value = self._get(name)
            if value is None:
                found.append(_not_set(name))
            elif name not in self.problems and _is_placeholder(value):
                found.append(
                    f"{name}={value!r} is the placeholder from .env.example; set your own value"
                )
        return found

    def _get(self, name: str) -> str | None:
        value = self.environ.get(name)
        return None if value is None or value.strip() == "" else value.strip()

    def _parse(self, name: str, default: _T, parse: Callable[[str], _T], what: str) -> _T:
        value = self._get(name)
        if value is None:
            return default
        try:
            return parse(value)
        except ValueError:
            return self._problem(name, f"{name}={value!r} is not {what}", default)

    def text(self, name: str, default: str, check: Callable[[str], str] | None = None) -> str:
        value = self._get(name)
        if value is None:
            return default
        if check is not None:
            try:
                check(value)
            except ValueError as exc:
                shown = _URL_PASSWORD.sub(r"\1***@", value)  # a URL's password stays out of it
                return self._problem(name, f"{name}={shown!r} is not {exc}", default)
        return value

    def integer(
        self, name: str, default: int, *, minimum: int = 0, maximum: int | None = None
    ) -> int:
        value = self._parse(name, default, int, "a whole number")
        if value < minimum or (maximum is not None and value > maximum):
            highest = "" if maximum is None else f" and at most {maximum}"
            return self._problem(
                name, f"{name}={value} is out of range (at least {minimum}{highest})", default
            )
        return value

    def number(self, name: str, default: float) -> float:
        value = self._parse(name, default, float, "a number")
        if not value > 0:
            return self._problem(name, f"{name}={value} must be greater than zero", default)
        return value

    def numbers(self, name: str, *, sip: bool = False) -> frozenset[str]:
        """A comma-separated list of E.164 phone numbers (and SIP URIs when ``sip``)."""
        value = self._get(name)
        if value is None:
            return frozenset()
        numbers = frozenset(part.strip() for part in value.split(",") if part.strip())
        bad = sorted(
            n for n in numbers if not (_E164.fullmatch(n) or (sip and _SIP_URI.fullmatch(n)))
        )
        if bad:
            kind = "an E.164 number (+ and 7 to 15 digits)"
            if sip:
                kind = "an E.164 number (+ and 7 to 15 digits) or a SIP URI"
            return self._problem(name, f"{name} has {bad[0]!r}, which is not {kind}", frozenset())
        return numbers

    def secrets_by_id(self, name: str) -> dict[str, str]:
        """Comma-separated ``id:secret`` pairs (the value itself is never echoed in a problem)."""
        value = self._get(name)
        if value is None:
            return {}
        pairs = [part.strip().partition(":") for part in value.split(",") if part.strip()]
        found = {key_id.strip(): secret.strip() for key_id, _, secret in pairs}
        if any(
            not sep or not key_id.strip() or not secret.strip() for key_id, sep, secret in pairs
        ):
            return self._problem(
                name,
                f"{name} must be comma-separated id:secret pairs (the key's SID, ':', its secret)",
                {},
            )
        return found

    def variables(self, name: str) -> dict[str, str]:
        """Comma-separated ``name=value`` pairs, each name a dynamic variable's (a word)."""
        value = self._get(name)
        if value is None:
            return {}
        pairs = [part.strip().partition("=") for part in value.split(",") if part.strip()]
        if any(not sep or not _VARIABLE_NAME.fullmatch(key.strip()) for key, sep, _ in pairs):
            return self._problem(
                name, f"{name} must be comma-separated name=value pairs (names are words)", {}
            )
        return {key.strip(): text.strip() for key, _, text in pairs}

    def boolean(self, name: str, default: bool) -> bool:
        return self._parse(name, default, _boolean, "true or false")

    def choice(self, name: str, default: str, choices: tuple[str, ...]) -> str:
        value = self._parse(name, default, str.lower, "text")
        if value not in choices:
            shown = ", ".join(choice or "(empty)" for choice in choices)
            return self._problem(name, f"{name}={value!r} is not one of {shown}", default)
        return value


def _window(value: str) -> str:
    parse_window(value, parse_zone("UTC"))
    return value


def _zone(value: str) -> str:
    parse_zone(value)
    return value


def _not_set(name: str) -> str:
    return f"{name} is not set; this command needs it (set it in the environment or in .env)"


def _is_placeholder(value: str) -> bool:
    """Whether ``value`` is one of ``.env.example``'s stand-ins rather than a real setting."""
    host = urlsplit(value).hostname if "://" in value else None
    return bool(_PLACEHOLDER_TEXT.search(value)) or bool(host and _PLACEHOLDER_HOST.fullmatch(host))


def _e164(value: str) -> str:
    if not _E164.fullmatch(value):
        raise ValueError("an E.164 phone number (+ and 7 to 15 digits, such as +15555550199)")
    return value


def _account_sid(value: str) -> str:
    if _PLACEHOLDER_TEXT.search(value):
        raise ValueError("a real account SID: ACxxx… is the placeholder from .env.example")
    if not _ACCOUNT_SID.fullmatch(value):
        raise ValueError("a Twilio account SID (AC and 32 hex digits, from Twilio's console)")
    return value


def _boolean(value: str) -> bool:
    lowered = value.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(value)


def _url(value: str, schemes: tuple[str, ...], what: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in schemes or not parts.netloc:
        raise ValueError(what)
    return value


def _http_url(value: str) -> str:
    return _url(value, ("http", "https"), "an http(s) URL")


def _ws_url(value: str) -> str:
    return _url(value, ("ws", "wss"), "a ws(s) URL")


def _base_url(value: str) -> str:
    _url(value, ("http", "https"), "an http(s) URL such as https://archer.example.com")
    if urlsplit(value).path not in ("", "/"):
        raise ValueError("a bare origin (no path), such as https://archer.example.com")
    return value


def _database_url(value: str) -> str:
    if not value.startswith(("sqlite:", "postgresql")):
        raise ValueError("an sqlite:/// or postgresql+psycopg:// URL")
    return value


def settings_from_os(
    *, groups: Collection[str] | None = None, requires: Collection[str] = ()
) -> Settings:
    """The settings of this process: ``.env`` in the working directory under ``os.environ``.

    Raises:
        ConfigError: ``.env`` is malformed, or (``SettingsError``) a checked setting is.
    """
    return Settings.from_environ(load_environ(os.environ), groups=groups, requires=requires)


def default_instance_id() -> str:
    """``<hostname>-<pid>-<4 hex>``: unique per process (and per server within one, as tests
    run several); Kubernetes sets ``INSTANCE_ID`` to the pod's name instead."""
    host = re.sub(r"[^A-Za-z0-9._-]", "_", os.uname().nodename)[:80].lstrip("._-") or "archer"
    return f"{host}-{os.getpid()}-{secrets.token_hex(2)}"


def _instance_id(value: str) -> str:
    if value and not _INSTANCE_ID.fullmatch(value):
        raise ValueError("an instance id (1-100 letters, digits, '.', '_' or '-')")
    return value
