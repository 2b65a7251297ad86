"""Kokoro ONNX and Piper on CPU, checked by ear: Whisper base transcribes what they say."""

import threading

import pytest

from deployments import audio
from deployments.kokoro import KokoroEngine
from deployments.piper import PiperEngine
from deployments.settings import KokoroSettings, WhisperSettings
from deployments.stt import WhisperEngine
from deployments.text import SynthesisCancelled
from tests.speechkit import SENTENCES, wer


@pytest.fixture(scope="module")
def whisper(tmp_path_factory):
    engine = WhisperEngine(WhisperSettings(), "cpu", data_dir=tmp_path_factory.mktemp("data"))
    engine.load()
    return engine


@pytest.fixture(scope="module", params=["piper", "kokoro"])
def tts(request):
    engine = PiperEngine("en_US-joe-medium") if request.param == "piper" else KokoroEngine(KokoroSettings(), "cpu")
    engine.load()
    return engine


def test_round_trip_wer(tts, whisper):
    said = []
    for sentence in SENTENCES:
        pcm = b"".join(c.tobytes() for c in tts.stream(sentence, sample_rate=16_000))
        # language given: the Kokoro ONNX voices are Japanese ones, and their
        # accent can make Whisper's language detection guess Japanese.
        said.append(whisper.transcribe(audio.decode(pcm, pcm_rate=16_000), language="en").text)
    score = wer(" ".join(SENTENCES), " ".join(said))
    assert score <= 0.15, said


def test_one_chunk_per_sentence_at_the_rate_asked(tts):
    chunks = list(tts.stream("Good morning. It is seven o'clock. Time to get up.", sample_rate=16_000))
    assert len(chunks) == 3
    assert all(c.dtype == "<i2" and len(c) > 16_000 * 0.3 for c in chunks)
    native = list(tts.stream("Good morning."))
    assert len(native[0]) / tts.sample_rate == pytest.approx(len(chunks[0]) / 16_000, rel=0.25)


def test_speed_shortens_audio(tts):
    slow = sum(len(c) for c in tts.stream(SENTENCES[0], speed=0.8))
    fast = sum(len(c) for c in tts.stream(SENTENCES[0], speed=1.6))
    assert fast < 0.8 * slow


def test_unknown_voice_and_rate(tts):
    with pytest.raises(ValueError, match="unknown voice"):
        next(tts.stream("hello", voice="nobody"))
    with pytest.raises(ValueError, match="outside"):
        next(tts.stream("hello", sample_rate=1_000))


def test_cancel_stops_a_running_stream(tts):
    stream = tts.stream(" ".join(SENTENCES))
    next(stream)
    threading.Thread(target=tts.cancel).start()
    with pytest.raises(SynthesisCancelled):
        list(stream)
    assert len(list(tts.stream("Still speaking after a cancel."))) == 1
