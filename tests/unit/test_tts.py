"""Kokoro ONNX and Piper on CPU, checked by ear: Whisper base transcribes what they say."""

import threading

import pytest

from deployments import audio
from deployments.kokoro import KokoroEngine
from deployments.piper import PiperEngine
from deployments.settings import KokoroSettings, WhisperSettings
from deployments.stt import WhisperEngine
from deployments.text import CancelKey, SynthesisCancelled, tts_sentences
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


def speak(tts, text: str, **kwargs) -> list:
    """What the gateway does: split once, one synthesize call per sentence."""
    return [tts.synthesize(sentence, **kwargs) for sentence in tts_sentences(text)]


def test_round_trip_wer(tts, whisper):
    said = []
    for sentence in SENTENCES:
        pcm = b"".join(c.tobytes() for c in speak(tts, sentence, sample_rate=16_000))
        # language given: the Kokoro ONNX voices are Japanese ones, and their
        # accent can make Whisper's language detection guess Japanese.
        said.append(whisper.transcribe(audio.decode(pcm, pcm_rate=16_000), language="en").text)
    score = wer(" ".join(SENTENCES), " ".join(said))
    assert score <= 0.15, said


def test_one_sentence_at_the_rate_asked(tts):
    chunks = speak(tts, "Good morning. It is seven o'clock. Time to get up.", sample_rate=16_000)
    assert len(chunks) == 3
    assert all(c.dtype == "<i2" and len(c) > 16_000 * 0.3 for c in chunks)
    native = tts.synthesize("Good morning.")
    assert len(native) / tts.sample_rate == pytest.approx(len(chunks[0]) / 16_000, rel=0.25)


def test_speed_shortens_audio(tts):
    slow = len(tts.synthesize(SENTENCES[0], speed=0.8))
    fast = len(tts.synthesize(SENTENCES[0], speed=1.6))
    assert fast < 0.8 * slow


def test_unknown_voice_rate_and_more_than_a_sentence(tts):
    with pytest.raises(ValueError, match="unknown voice"):
        tts.synthesize("hello", voice="nobody")
    with pytest.raises(ValueError, match="outside"):
        tts.synthesize("hello", sample_rate=1_000)
    with pytest.raises(ValueError, match="one sentence"):
        tts.synthesize("word " * 100)


def test_cancel_stops_that_key_only_even_between_sentences(tts):
    mine, other = CancelKey.new("voice"), CancelKey.new("voice")
    tts.synthesize("Hello.", key=mine)
    assert tts.cancel(mine) == 1
    with pytest.raises(SynthesisCancelled):
        tts.synthesize("The next sentence of the cancelled turn.", key=mine)
    assert len(tts.synthesize("Another turn speaks on.", key=other)) > 0


def test_cancelling_a_scope_stops_its_requests_and_no_other_scope(tts):
    phone, speech = CancelKey.new("phone"), CancelKey.new("speech")
    tts.synthesize("Hello.", key=phone)
    tts.synthesize("Hello.", key=speech)
    assert tts.cancel(CancelKey("phone")) >= 1
    with pytest.raises(SynthesisCancelled):
        tts.synthesize("More for the phone.", key=phone)
    assert len(tts.synthesize("The other stream goes on.", key=speech)) > 0
    assert len(tts.synthesize("A new phone request speaks.", key=CancelKey.new("phone"))) > 0


def test_two_concurrent_streams_one_cancelled_the_other_finishes_whole():
    """Two callers on one Piper engine in two threads; one barges in mid-way."""
    engine = PiperEngine("en_US-joe-medium")
    engine.load()
    sentences = tts_sentences(" ".join(SENTENCES * 2))
    solo = [len(engine.synthesize(s)) for s in sentences]
    keys = {"a": CancelKey.new("voice"), "b": CancelKey.new("voice")}
    spoken: dict[str, list[int]] = {"a": [], "b": []}
    errors: dict[str, BaseException] = {}
    started = threading.Event()

    def caller(name: str) -> None:
        try:
            for sentence in sentences:
                spoken[name].append(len(engine.synthesize(sentence, key=keys[name])))
                started.set()
        except SynthesisCancelled as exc:
            errors[name] = exc

    threads = {n: threading.Thread(target=caller, args=(n,)) for n in keys}
    for t in threads.values():
        t.start()
    assert started.wait(30)
    engine.cancel(keys["a"])
    for t in threads.values():
        t.join(120)
    assert isinstance(errors.get("a"), SynthesisCancelled) and len(spoken["a"]) < len(sentences)
    assert "b" not in errors and len(spoken["b"]) == len(sentences)
    # the same audio as alone, sentence by sentence (Piper's noise varies lengths a little)
    assert spoken["b"] == pytest.approx(solo, rel=0.2)
