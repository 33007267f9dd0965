"""``Settings.from_environ``: defaults, parsing, and one clear error per bad variable."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from archer.errors import ConfigError, SettingsError
from archer.settings import Settings, load_environ, parse_dotenv

SERVING = {
    "WEBHOOK_BASE_URL": "https://archer.example.com/",
    "TWILIO_ACCOUNT_SID": "AC" + "0" * 32,
    "TWILIO_AUTH_TOKEN": "twilio-secret-token",
    "CARTESIA_API_KEY": "sk_car_secret_key",
    "CARTESIA_AGENT_ID": "agent_123",
}


def test_defaults_need_nothing() -> None:
    """With an empty environment every setting has its documented default."""
    settings = Settings.from_environ({})
    assert settings.database_url == "sqlite:///archer.db"
    assert (settings.host, settings.port) == ("0.0.0.0", 8000)
    assert settings.cartesia_audio_format == "mulaw_8000"
    assert settings.twilio_validate_signatures is True
    assert settings.limits.flush_timeout == 5.0


def test_serving_settings_are_parsed() -> None:
    """The five serving variables are read; the base URL loses its trailing slash."""
    settings = Settings.from_environ(SERVING)
    settings.check_serving()
    assert settings.webhook_base_url == "https://archer.example.com"
    assert settings.media_stream_url == "wss://archer.example.com/ws/cartesia"


@pytest.mark.parametrize("missing", sorted(SERVING))
def test_check_serving_names_the_missing_variable(missing: str) -> None:
    """Each required variable, when absent, is named in the error."""
    environ = {k: v for k, v in SERVING.items() if k != missing}
    with pytest.raises(ConfigError, match=missing):
        Settings.from_environ(environ).check_serving()


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("ARCHER_PORT", "eighty"),
        ("ARCHER_PORT", "70000"),
        ("FLUSH_TIMEOUT", "-1"),
        ("TOOL_TIMEOUT", "soon"),
        ("CARTESIA_AUDIO_FORMAT", "mp3"),
        ("LOG_LEVEL", "loud"),
        ("WEBHOOK_BASE_URL", "archer.example.com"),
        ("WEBHOOK_BASE_URL", "https://archer.example.com/twilio"),
        ("CARTESIA_WS_URL", "https://api.cartesia.ai"),
        ("DATABASE_URL", "mysql://db"),
        ("TWILIO_VALIDATE_SIGNATURES", "maybe"),
        ("ARCHER_WORKERS", "0"),
        ("ARCHER_WORKERS", "many"),
        ("MEDIA_PORT", "70000"),
        ("AGENT_AUDIO_BATCH_MS", "30"),
    ],
)
def test_malformed_values_name_their_variable(name: str, value: str) -> None:
    """A malformed value raises one ``ConfigError`` whose message starts with the variable."""
    with pytest.raises(ConfigError) as raised:
        Settings.from_environ({**SERVING, name: value})
    assert str(raised.value).startswith(name)
    assert "\n" not in str(raised.value)


def test_port_comes_from_archer_port_then_port() -> None:
    """``ARCHER_PORT`` wins over the platform's ``PORT``, which wins over the default."""
    assert Settings.from_environ({"PORT": "9000"}).port == 9000
    assert Settings.from_environ({"PORT": "9000", "ARCHER_PORT": "9100"}).port == 9100


def test_workers_default_to_one() -> None:
    """One process unless ``ARCHER_WORKERS`` asks for more (``--workers`` overrides both)."""
    assert Settings.from_environ({}).workers == 1
    assert Settings.from_environ({"ARCHER_WORKERS": "4"}).workers == 4


def test_secrets_never_appear_in_repr() -> None:
    """Tokens, keys and the database URL (which may hold a password) are left out of repr."""
    text = repr(
        Settings.from_environ({**SERVING, "DATABASE_URL": "postgresql+psycopg://u:pw@db/x"})
    )
    for secret in ("twilio-secret-token", "sk_car_secret_key", "pw@db"):
        assert secret not in text
    assert "agent_123" in text


def test_line_agents_are_one_setting_away() -> None:
    """``CARTESIA_PROTOCOL=line`` serves; the Line output format and allow-list are checked."""
    settings = Settings.from_environ(
        {
            **SERVING,
            "CARTESIA_PROTOCOL": "line",
            "CARTESIA_AUDIO_FORMAT": "pcm_16000",
            "CARTESIA_LINE_OUTPUT_FORMAT": "pcm_24000",
            "TRANSFER_ALLOWLIST": "+15555550199, +15555550198, sip:desk@pbx.example.com",
        }
    )
    settings.check_serving()
    assert settings.agent_output_format == "pcm_24000"
    assert settings.transfer_allowlist == {
        "+15555550199",
        "+15555550198",
        "sip:desk@pbx.example.com",
    }
    managed = Settings.from_environ({**SERVING, "CARTESIA_LINE_OUTPUT_FORMAT": "pcm_24000"})
    assert managed.agent_output_format == "mulaw_8000"  # Managed agents answer in their input
    with pytest.raises(ConfigError, match="TRANSFER_ALLOWLIST"):
        Settings.from_environ({**SERVING, "TRANSFER_ALLOWLIST": "+1555, 911"})
    with pytest.raises(ConfigError, match=r"not an E\.164 number .* or a SIP URI"):
        Settings.from_environ({**SERVING, "TRANSFER_ALLOWLIST": "sip:<desk>"})
    with pytest.raises(ConfigError, match="CARTESIA_LINE_OUTPUT_FORMAT"):
        Settings.from_environ({**SERVING, "CARTESIA_LINE_OUTPUT_FORMAT": "opus"})


def test_dotenv_is_read_and_the_environment_wins(tmp_path: Path) -> None:
    """``.env`` fills in what the environment lacks; quotes, comments and ``export`` work."""
    dotenv = tmp_path / ".env"
    dotenv.write_text(
        '# comment\nexport LOG_LEVEL=debug\nCARTESIA_AGENT_ID="agent from file"\n'
        "ARCHER_PORT=9000 # trailing comment\n"
    )
    merged = load_environ({"ARCHER_PORT": "9100"}, dotenv)
    assert merged == {
        "LOG_LEVEL": "debug",
        "CARTESIA_AGENT_ID": "agent from file",
        "ARCHER_PORT": "9100",
    }


def test_dotenv_rejects_lines_that_are_not_assignments() -> None:
    """A garbled ``.env`` line is reported by its number."""
    with pytest.raises(ConfigError, match="line 2"):
        parse_dotenv("A=1\nthis is not a setting\n")


def test_instance_settings_and_their_defaults() -> None:
    """Leases and the reaper: a unique default id per process, the documented defaults."""
    settings = Settings.from_environ({})
    assert f"-{os.getpid()}-" in settings.instance_id
    assert Settings.from_environ({}).instance_id != settings.instance_id
    assert (
        settings.instance_lease_seconds,
        settings.instance_heartbeat_seconds,
        settings.reaper_interval,
    ) == (15.0, 5.0, 10.0)
    named = Settings.from_environ({"INSTANCE_ID": "archer-7f9c-x2", "REAPER_INTERVAL": "1"})
    assert (named.instance_id, named.reaper_interval) == ("archer-7f9c-x2", 1.0)


@pytest.mark.parametrize("value", ["../etc", "pod a", "-leading-dash", "x" * 101])
def test_an_instance_id_that_cannot_name_a_file_is_refused(value: str) -> None:
    with pytest.raises(ConfigError, match="INSTANCE_ID"):
        Settings.from_environ({"INSTANCE_ID": value})


def test_shared_keys_are_id_secret_pairs_and_never_echoed() -> None:
    """TWILIO_SHARED_KEYS holds SharedKey secrets by key id; a malformed value names the
    variable without repeating the secrets."""
    # Secrets no setting's name or default contains ("one" is in "outbound_timezone").
    settings = Settings.from_environ({"TWILIO_SHARED_KEYS": " ks_old:s1x , ks_new:s2x:s3x "})
    assert settings.twilio_shared_keys == {"ks_old": "s1x", "ks_new": "s2x:s3x"}
    assert "s1x" not in repr(settings)
    with pytest.raises(ConfigError, match="TWILIO_SHARED_KEYS must be") as refused:
        Settings.from_environ({"TWILIO_SHARED_KEYS": "ks_old:hunter2,no-secret-here"})
    assert "hunter2" not in str(refused.value)


def test_the_outbound_settings_are_checked_one_line_each() -> None:
    """OUTBOUND_*: the calling window and zone parse; a bad value names its variable."""
    settings = Settings.from_environ(
        {
            "OUTBOUND_WINDOW": "21:00-07:30",
            "OUTBOUND_TIMEZONE": "Europe/London",
            "OUTBOUND_CPS": "2",
            "OUTBOUND_FROM_NUMBER": "+15555550100",
        }
    )
    window = settings.calling_window()
    assert window.describe() == "21:00-07:30 Europe/London"
    assert settings.outbound_cps == 2.0
    with pytest.raises(SettingsError) as refused:
        Settings.from_environ(
            {
                "OUTBOUND_WINDOW": "8-21",
                "OUTBOUND_TIMEZONE": "Mars/Olympus",
                "OUTBOUND_CPS": "0",
                "OUTBOUND_MAX_ATTEMPTS": "0",
                "OUTBOUND_FROM_NUMBER": "5550100",
            }
        )
    named = " ".join(refused.value.problems)
    for name in (
        "OUTBOUND_WINDOW",
        "OUTBOUND_TIMEZONE",
        "OUTBOUND_CPS",
        "OUTBOUND_MAX_ATTEMPTS",
        "OUTBOUND_FROM_NUMBER",
    ):
        assert name in named
    assert "24-hour" in named
    assert "IANA" in named


def test_each_cartesia_protocol_has_its_own_api_version() -> None:
    """Issue 16: Managed Agents and Line are dated apart; the old single setting is retired."""
    from archer.server import agent_connector

    defaults = Settings.from_environ(SERVING)
    assert (defaults.cartesia_managed_version, defaults.cartesia_line_version) == (
        "2026-08-14",
        "2026-03-01",
    )
    chosen = Settings.from_environ(
        {**SERVING, "CARTESIA_MANAGED_VERSION": "2027-01-01", "CARTESIA_LINE_VERSION": "2027-02-02"}
    )
    assert getattr(agent_connector(chosen), "version", None) == "2027-01-01"
    line = Settings.from_environ({**SERVING, "CARTESIA_PROTOCOL": "line"})
    assert getattr(agent_connector(line), "version", None) == "2026-03-01"
    with pytest.raises(
        ConfigError, match="CARTESIA_VERSION is retired: set CARTESIA_MANAGED_VERSION"
    ):
        Settings.from_environ({**SERVING, "CARTESIA_VERSION": "2026-08-14"})


def test_the_reconnect_budget_is_read_and_checked() -> None:
    settings = Settings.from_environ(SERVING)
    assert (settings.agent_reconnect_attempts, settings.agent_reconnect_window) == (3, 15.0)
    off = Settings.from_environ({**SERVING, "AGENT_RECONNECT_ATTEMPTS": "0"})
    assert off.agent_reconnect_attempts == 0
    with pytest.raises(ConfigError, match="AGENT_RECONNECT_ATTEMPTS"):
        Settings.from_environ({**SERVING, "AGENT_RECONNECT_ATTEMPTS": "-1"})
    with pytest.raises(ConfigError, match="AGENT_RECONNECT_WINDOW"):
        Settings.from_environ({**SERVING, "AGENT_RECONNECT_WINDOW": "0"})


def test_resume_variables_are_name_value_pairs() -> None:
    assert Settings.from_environ(SERVING).agent_resume_variables == {}
    settings = Settings.from_environ(
        {**SERVING, "AGENT_RESUME_VARIABLES": "resumed=true, resume_note=we were cut off"}
    )
    assert settings.agent_resume_variables == {"resumed": "true", "resume_note": "we were cut off"}
    with pytest.raises(ConfigError, match="AGENT_RESUME_VARIABLES"):
        Settings.from_environ({**SERVING, "AGENT_RESUME_VARIABLES": "not a pair"})
