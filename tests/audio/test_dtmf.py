"""DTMF: each tone is its digit's ITU pair in whole frames, unclipped; the detector finds it."""

from __future__ import annotations

import base64

import numpy as np
import numpy.typing as npt
import pytest

from archer.audio import clips, dtmf, g711

DIGITS = "123A456B789C*0#D"
SILENCE = bytes([g711.SILENCE])


def _samples(ulaw: bytes) -> npt.NDArray[np.float64]:
    return g711.decode_samples(ulaw).astype(np.float64)


def test_keypad_is_itu_q23() -> None:
    """Each key is its row's low tone plus its column's high tone."""
    assert dtmf.DTMF_FREQUENCIES["1"] == (697, 1209)
    assert dtmf.DTMF_FREQUENCIES["5"] == (770, 1336)
    assert dtmf.DTMF_FREQUENCIES["9"] == (852, 1477)
    assert dtmf.DTMF_FREQUENCIES["0"] == (941, 1336)
    assert dtmf.DTMF_FREQUENCIES["#"] == (941, 1477)
    assert dtmf.DTMF_FREQUENCIES["D"] == (941, 1633)
    assert "".join(sorted(dtmf.DTMF_FREQUENCIES)) == "".join(sorted(DIGITS))


@pytest.mark.parametrize("digit", DIGITS)
def test_every_digit_is_detected_exactly(digit: str) -> None:
    """The tone for each digit is detected as that digit, once."""
    assert dtmf.detect_digits(dtmf.dtmf_tone(digit)) == digit


@pytest.mark.parametrize("digit", DIGITS)
def test_tone_is_the_two_frequencies_of_its_digit(digit: str) -> None:
    """Nearly all the tone's energy is at its row and column frequencies, about equal in level."""
    tone = _samples(dtmf.dtmf_tone(digit))[200:600]  # 50 ms inside the tone, past the ramp
    row, column = dtmf.DTMF_FREQUENCIES[digit]
    row_power = dtmf.goertzel_power(tone, row, 8000)
    column_power = dtmf.goertzel_power(tone, column, 8000)
    assert row_power + column_power > 0.95 * np.mean(tone**2)
    assert 10 * np.log10(row_power / column_power) == pytest.approx(0, abs=0.5)
    # Each component is at -9 dBFS: peak amplitude 32767 * 10 ** (-9 / 20), power peak² / 2.
    expected = (32767 * 10 ** (-9 / 20)) ** 2 / 2
    assert 10 * np.log10(row_power / expected) == pytest.approx(0, abs=0.5)


def test_goertzel_power_is_the_mean_square_of_a_sine_at_that_frequency() -> None:
    """A sine of amplitude A gives A²/2 at its frequency and little at a DTMF neighbour."""
    t = np.arange(160) / 8000
    sine = 1000 * np.sin(2 * np.pi * 697 * t)
    assert dtmf.goertzel_power(sine, 697, 8000) == pytest.approx(1000**2 / 2, rel=0.02)
    assert dtmf.goertzel_power(sine, 941, 8000) < 0.01 * 1000**2 / 2
    assert dtmf.goertzel_power(np.zeros(0), 697, 8000) == 0.0


def test_sequence_is_detected_in_order() -> None:
    """Tones for "1234#" back to back come out as "1234#"."""
    assert dtmf.detect_digits(b"".join(dtmf.dtmf_tone(d) for d in "1234#")) == "1234#"


def test_repeated_digit_is_reported_once_per_tone() -> None:
    """ "5500": a repeated digit separated by its gap is two digits; one tone is never two."""
    audio = b"".join(dtmf.dtmf_tone(d) for d in "5500")
    assert dtmf.detect_digits(audio) == "5500"
    assert dtmf.detect_digits(dtmf.dtmf_tone("7", tone_ms=400)) == "7"


@pytest.mark.parametrize("offset", [0, 1, 37, 80, 159])
def test_detection_does_not_depend_on_frame_alignment(offset: int) -> None:
    """Tones starting anywhere inside a 20 ms block are still found."""
    audio = SILENCE * offset + b"".join(dtmf.dtmf_tone(d) for d in "90*")
    assert dtmf.detect_digits(audio) == "90*"


def test_silence_and_speech_have_no_digits() -> None:
    """Silence, every speech clip, and speech 12 dB louder (near clipping) contain no digits."""
    assert dtmf.detect_digits(SILENCE * 8000) == ""
    assert dtmf.detect_digits(clips.speech_clip("agent_greeting")) == ""
    for name in sorted(clips.CLIP_NAMES):
        speech = _samples(clips.speech_clip(name))
        for gain_db in (0, 12):
            louder = np.clip(speech * 10 ** (gain_db / 20), -32768, 32767).astype(np.int16)
            assert dtmf.detect_digits(g711.encode_samples(louder)) == "", (name, gain_db)


def test_tones_between_and_under_speech_are_found() -> None:
    """A real mix: speech, "42#" with speech 11 dB below the tones mixed in, speech again."""
    greeting = clips.speech_clip("agent_greeting")
    tones = _samples(b"".join(dtmf.dtmf_tone(d) for d in "42#"))
    speech = _samples(clips.speech_clip("agent_balance"))[: len(tones)]
    mixed = g711.encode_samples(np.clip(tones + speech, -32768, 32767).astype(np.int16))
    assert dtmf.detect_digits(greeting + mixed + greeting) == "42#"


@pytest.mark.parametrize(("tone_ms", "gap_ms"), [(100, 100), (70, 50), (40, 40), (65, 0), (90, 33)])
def test_tone_is_whole_frames(tone_ms: int, gap_ms: int) -> None:
    """Tone plus gap is a whole number of 160-byte frames, at least as long as asked for."""
    tone = dtmf.dtmf_tone("5", tone_ms=tone_ms, gap_ms=gap_ms)
    assert len(tone) % 160 == 0
    assert 8 * (tone_ms + gap_ms) <= len(tone) < 8 * (tone_ms + gap_ms) + 160
    assert len(dtmf.dtmf_tone("5")) == 1600  # the default: 100 ms tone, 100 ms gap, 10 frames


def test_tone_is_followed_by_silence() -> None:
    """After tone_ms the bytes are μ-law silence up to the end."""
    tone = dtmf.dtmf_tone("8", tone_ms=100, gap_ms=100)
    assert tone[800:] == SILENCE * 800
    assert SILENCE * 10 not in tone[:800]


@pytest.mark.parametrize("digit", DIGITS)
def test_no_sample_clips_and_the_ends_are_ramped(digit: str) -> None:
    """Peaks stay below μ-law's ceiling (about -3 dBFS) and the tone fades in and out over 5 ms."""
    samples = _samples(dtmf.dtmf_tone(digit))
    peak = np.abs(samples).max()
    assert peak < 32124  # the loudest μ-law value: anything at it may have clipped
    assert 20 * np.log10(peak / 32767) == pytest.approx(-3, abs=0.6)
    assert samples[0] == samples[799] == 0  # the ramps start and end at zero
    # The ends are the two sines under a 5 ms raised-cosine ramp, within μ-law's quantisation.
    row, column = dtmf.DTMF_FREQUENCIES[digit]
    t = np.arange(800) / 8000
    full = 32767 * 10 ** (-9 / 20) * (np.sin(2 * np.pi * row * t) + np.sin(2 * np.pi * column * t))
    ramp = 0.5 - 0.5 * np.cos(np.pi * np.arange(40) / 40)
    start, end = full[:40] * ramp, full[760:] * ramp[::-1]
    assert np.all(np.abs(samples[:40] - start) <= 0.035 * np.abs(start) + 8)
    assert np.all(np.abs(samples[760:800] - end) <= 0.035 * np.abs(end) + 8)


def test_sample_rate_is_respected() -> None:
    """At 16 kHz the tone has twice the samples and 20 ms frames of 320; the detector agrees."""
    tone = dtmf.dtmf_tone("6", sample_rate=16000)
    assert len(tone) == 3200
    assert dtmf.detect_digits(tone, sample_rate=16000) == "6"


@pytest.mark.parametrize("bad", ["", "E", "12", "x", " ", "½"])
def test_non_digit_is_refused(bad: str) -> None:
    """Anything but one of 0-9 * # A-D is a ValueError."""
    with pytest.raises(ValueError, match="DTMF digit"):
        dtmf.dtmf_tone(bad)


def test_lowercase_letters_are_accepted() -> None:
    """ "a" to "d" are the same keys as "A" to "D"."""
    assert dtmf.dtmf_tone("b") == dtmf.dtmf_tone("B")


@pytest.mark.parametrize(("tone_ms", "gap_ms"), [(0, 100), (-5, 100), (100, -1)])
def test_bad_durations_are_refused(tone_ms: int, gap_ms: int) -> None:
    """A tone must last; a gap may be zero but not negative."""
    with pytest.raises(ValueError, match="tone_ms"):
        dtmf.dtmf_tone("1", tone_ms=tone_ms, gap_ms=gap_ms)


def test_short_or_empty_audio_has_no_digits() -> None:
    """Less than one 20 ms block is no digit, not an error."""
    assert dtmf.detect_digits(b"") == ""
    assert dtmf.detect_digits(dtmf.dtmf_tone("1")[:100]) == ""


def test_tone_frames_are_the_tone_in_twilio_media_frames() -> None:
    """What the agent's DTMF becomes towards Twilio: 20 ms base64 μ-law frames of the tone."""
    frames = dtmf.dtmf_tone_frames("5")
    raw = [base64.b64decode(frame) for frame in frames]
    assert {len(frame) for frame in raw} == {160}
    assert b"".join(raw) == dtmf.dtmf_tone("5")
    assert dtmf.detect_digits(b"".join(raw)) == "5"
    with pytest.raises(ValueError, match="not a DTMF digit"):
        dtmf.dtmf_tone_frames("x")
