import io

import numpy as np
import pytest
import soundfile as sf

from deployments import audio
from deployments.text import clean_text, split_sentences


def tone(rate: int, seconds: float = 1.0, hz: float = 440.0) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (0.5 * np.sin(2 * np.pi * hz * t)).astype(np.float32)


@pytest.mark.parametrize("fmt,subtype", [("WAV", "PCM_16"), ("FLAC", "PCM_16"), ("OGG", "VORBIS")])
def test_decode_containers(fmt, subtype):
    buf = io.BytesIO()
    sf.write(buf, np.stack([tone(44_100)] * 2, axis=1), 44_100, format=fmt, subtype=subtype)
    clip = audio.decode(buf.getvalue())
    assert clip.rate == 44_100 and clip.samples.ndim == 1  # stereo mixed down
    assert clip.seconds == pytest.approx(1.0, abs=0.01)


def test_decode_raw_pcm_needs_its_rate():
    pcm = audio.to_int16(tone(8_000)).tobytes()
    clip = audio.decode(pcm, pcm_rate=8_000)
    assert clip.rate == 8_000 and clip.seconds == pytest.approx(1.0)
    with pytest.raises(ValueError, match="odd number of bytes"):
        audio.decode(pcm + b"\x00", pcm_rate=8_000)
    with pytest.raises(ValueError, match="outside"):
        audio.decode(pcm, pcm_rate=1_000)
    with pytest.raises(ValueError, match="cannot decode"):  # no rate: not a container
        audio.decode(pcm)


@pytest.mark.parametrize("data,message", [
    (b"", "empty"), (b"RIFF\x00\x00garbage" * 10, "cannot decode"), (b"\x00" * 100, "cannot decode"),
])
def test_decode_refuses_bad_audio(data, message):
    with pytest.raises(ValueError, match=message):
        audio.decode(data)


def test_decode_limits():
    wav = audio.encode(audio.to_int16(tone(16_000, 3.0)), 16_000, "wav")
    with pytest.raises(ValueError, match="limit is 1000 bytes"):
        audio.decode(wav, max_bytes=1000)
    with pytest.raises(ValueError, match="limit is 2 s"):
        audio.decode(wav, max_seconds=2)


def test_resample_keeps_duration_and_pitch():
    out = audio.resample(tone(8_000, hz=300.0), 8_000, 16_000)
    assert len(out) == 16_000
    spectrum = np.abs(np.fft.rfft(out))
    assert np.argmax(spectrum) == pytest.approx(300, abs=2)  # 1 s clip: bin = Hz


@pytest.mark.parametrize("fmt", ["wav", "flac", "opus", "mp3"])
def test_encode_round_trip(fmt):
    data = audio.encode(audio.to_int16(tone(24_000)), 24_000, fmt)
    clip = audio.decode(data)
    assert clip.seconds == pytest.approx(1.0, abs=0.1)
    assert clip.rate == 24_000


def test_stream_encoder_wav_is_playable_before_its_end_is_known():
    enc = audio.StreamEncoder("wav", 16_000)
    pieces = [enc.start() + enc.add(audio.to_int16(tone(16_000))), enc.add(audio.to_int16(tone(16_000)))]
    clip = audio.decode(b"".join(pieces) + enc.finish())
    assert clip.rate == 16_000 and clip.seconds == pytest.approx(2.0)


def test_stream_encoder_compressed_is_whole_at_the_end():
    enc = audio.StreamEncoder("mp3", 24_000)
    assert enc.start() + enc.add(audio.to_int16(tone(24_000))) + enc.add(audio.to_int16(tone(24_000))) == b""
    assert audio.decode(enc.finish()).seconds == pytest.approx(2.0, abs=0.1)


def test_split_sentences_keeps_abbreviations_and_bounds_length():
    assert split_sentences("Hello Mr. Smith. How are you? Fine! Bye") == [
        "Hello Mr. Smith.", "How are you?", "Fine!", "Bye"]
    long = "word, " * 200
    parts = split_sentences(long, max_chars=100)
    assert all(len(p) <= 100 for p in parts) and " ".join(parts).count("word") == 200


@pytest.mark.parametrize("text,message", [
    ("", "empty"), ("   ", "empty"), ("😀🎉", "empty"), ("a\x00b", "control"),
    ("x" * 5000, "limit is 4096"), ("?!...", "nothing speakable"),
])
def test_clean_text_refuses(text, message):
    with pytest.raises(ValueError, match=message):
        clean_text(text, 4096)


def test_clean_text_drops_emoji_inside_text():
    assert clean_text("Good morning 🌞 Sam\n", 4096) == "Good morning Sam"
