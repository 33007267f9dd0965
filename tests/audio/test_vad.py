"""EnergyVad: start and stop hangover, thresholds, events on the audio's own timeline."""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
import pytest

from archer.audio.vad import EnergyVad, SpeechEnded, SpeechStarted, level_dbfs

RATE = 8000
FRAME_MS = 20.0


def tone(dbfs: float, *, rate: int = RATE, ms: float = FRAME_MS) -> npt.NDArray[np.int16]:
    """A 1 kHz sine whose RMS level is ``dbfs``."""
    count = int(rate * ms / 1000)
    peak = 32768.0 * 10 ** (dbfs / 20) * math.sqrt(2)
    t = np.arange(count) / rate
    return np.round(peak * np.sin(2 * np.pi * 1000 * t)).astype(np.int16)


def silence(*, rate: int = RATE, ms: float = FRAME_MS) -> npt.NDArray[np.int16]:
    """Digital silence."""
    return np.zeros(int(rate * ms / 1000), dtype=np.int16)


def feed_all(vad: EnergyVad, frames: list[npt.NDArray[np.int16]]) -> list[object]:
    """Feed 20 ms frames in order; return (frame index, event) for each event."""
    events: list[object] = []
    for index, frame in enumerate(frames):
        event = vad.feed(frame, duration_ms=FRAME_MS)
        if event is not None:
            events.append((index, event))
    return events


def test_level_of_a_tone_and_of_silence() -> None:
    """level_dbfs measures a sine's RMS in dBFS and calls zeros -inf."""
    assert level_dbfs(tone(-10.0)) == pytest.approx(-10.0, abs=0.1)
    assert level_dbfs(tone(-35.0, rate=44100)) == pytest.approx(-35.0, abs=0.1)
    assert level_dbfs(silence()) == -math.inf
    assert level_dbfs(np.array([], dtype=np.int16)) == -math.inf


def test_speech_starts_after_start_ms_of_loud_frames() -> None:
    """Three loud 20 ms frames (60 ms) start speech, dated at the first loud frame."""
    vad = EnergyVad()
    events = feed_all(vad, [silence(), silence(), tone(-10), tone(-10), tone(-10), tone(-10)])
    assert events == [(4, SpeechStarted(at_ms=40.0))]
    assert vad.speaking


def test_a_click_shorter_than_start_ms_is_not_speech() -> None:
    """Two loud frames between quiet ones never start speech."""
    vad = EnergyVad()
    frames = [tone(-10), tone(-10), silence(), tone(-10), tone(-10), silence()] * 5
    assert feed_all(vad, frames) == []
    assert not vad.speaking


def test_speech_ends_after_stop_ms_of_quiet() -> None:
    """Speech ends after 600 ms of quiet, dated at the end of the last loud frame."""
    vad = EnergyVad()
    frames = [tone(-10)] * 10 + [silence()] * 40
    events = feed_all(vad, frames)
    assert events == [(2, SpeechStarted(at_ms=0.0)), (39, SpeechEnded(at_ms=200.0))]
    assert not vad.speaking
    assert vad.position_ms == pytest.approx(1000.0)


def test_pauses_between_words_do_not_end_speech() -> None:
    """Quiet gaps shorter than stop_ms keep the speech going."""
    vad = EnergyVad()
    word = [tone(-20)] * 10
    gap = [silence()] * 25  # 500 ms
    events = feed_all(vad, word + gap + word + gap + word)
    assert events == [(2, SpeechStarted(at_ms=0.0))]
    assert vad.speaking


def test_threshold_decides_what_is_loud() -> None:
    """A -45 dBFS hum is quiet at the default -40 dBFS threshold but speech at -50."""
    hum = [tone(-45)] * 10
    assert feed_all(EnergyVad(), hum) == []
    assert feed_all(EnergyVad(threshold_dbfs=-50.0), hum) == [(2, SpeechStarted(at_ms=0.0))]


def test_durations_not_frame_counts_drive_the_timers() -> None:
    """One 100 ms frame is enough to start speech; the sample rate is irrelevant."""
    vad = EnergyVad(start_ms=60, stop_ms=200)
    assert vad.feed(tone(-10, rate=16000, ms=100), duration_ms=100) == SpeechStarted(at_ms=0.0)
    assert vad.feed(silence(rate=16000, ms=100), duration_ms=100) is None
    assert vad.feed(silence(rate=16000, ms=100), duration_ms=100) == SpeechEnded(at_ms=100.0)


def test_speech_can_start_again_after_it_ended() -> None:
    """After an end, a new loud run starts a second utterance."""
    vad = EnergyVad(stop_ms=100)
    frames = [tone(-10)] * 4 + [silence()] * 5 + [tone(-10)] * 3
    events = feed_all(vad, frames)
    assert [event for _, event in events] == [
        SpeechStarted(at_ms=0.0),
        SpeechEnded(at_ms=80.0),
        SpeechStarted(at_ms=180.0),
    ]


def test_events_are_frozen() -> None:
    """VAD events are immutable values."""
    event = SpeechStarted(at_ms=1.0)
    with pytest.raises(AttributeError):
        event.at_ms = 2.0  # type: ignore[misc]


@pytest.mark.parametrize(
    "kwargs",
    [{"start_ms": 0}, {"stop_ms": -1}, {"threshold_dbfs": 3.0}],
)
def test_bad_settings_are_refused(kwargs: dict[str, float]) -> None:
    """Non-positive timers and a threshold above full scale raise ValueError."""
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        EnergyVad(**kwargs)


def test_bad_duration_is_refused() -> None:
    """A negative or NaN duration raises ValueError."""
    vad = EnergyVad()
    with pytest.raises(ValueError, match="duration_ms"):
        vad.feed(silence(), duration_ms=-20)
    with pytest.raises(ValueError, match="duration_ms"):
        vad.feed(silence(), duration_ms=math.nan)
