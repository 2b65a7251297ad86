"""Chatterbox's Blackwell patches against the complex-abs reference, and the voice allowlist.

chatterbox-tts itself is GPU-only and not installed here; these run its
replacement functions on CPU with torch.
"""

import json

import pytest

from deployments.chatterbox import (
    ChatterboxEngine, VoiceReferences, on_cpu, power_spectrum, s3_log_mel_spectrogram,
)
from deployments.settings import ChatterboxSettings
from tests.speechkit import espeak_wav

torch = pytest.importorskip("torch")


def test_power_spectrum_matches_complex_abs_squared():
    audio = torch.randn(16_000)
    stft = torch.stft(audio, 400, 160, window=torch.hann_window(400), return_complex=True)
    assert torch.allclose(power_spectrum(stft), stft.abs() ** 2, rtol=1e-4, atol=1e-5)


class FakeS3Tokenizer:
    """The attributes S3Tokenizer.log_mel_spectrogram reads (n_fft 400, 128 mel bins)."""

    device = "cpu"
    n_fft = 400
    window = torch.hann_window(400)
    _mel_filters = torch.rand(128, 201)


def reference_log_mel(tok, audio):
    """chatterbox-tts 0.1.7's S3Tokenizer.log_mel_spectrogram, verbatim math (complex abs)."""
    stft = torch.stft(audio, tok.n_fft, 160, window=tok.window, return_complex=True)
    magnitudes = stft[..., :-1].abs() ** 2
    log_spec = torch.clamp(tok._mel_filters @ magnitudes, min=1e-10).log10()
    log_spec = torch.maximum(log_spec, log_spec.max() - 8.0)
    return (log_spec + 4.0) / 4.0


def test_patched_log_mel_matches_the_original():
    tok, audio = FakeS3Tokenizer(), torch.randn(32_000)
    patched = s3_log_mel_spectrogram(tok, audio)
    assert patched.shape == (128, 200)
    assert torch.allclose(patched, reference_log_mel(tok, audio), atol=1e-5)
    padded = s3_log_mel_spectrogram(tok, audio.numpy(), padding=160)
    assert padded.shape == (128, 201)


def test_on_cpu_runs_on_cpu_and_returns_to_the_input_device():
    seen = []

    def features(audios):
        seen.extend(a.device.type for a in audios)
        return torch.stack([a * 2 for a in audios]), [len(a) for a in audios]

    out, lengths = on_cpu(features)([torch.ones(4), torch.ones(4)])
    assert seen == ["cpu", "cpu"] and lengths == [4, 4]
    assert out.device.type == "cpu" and torch.equal(out, torch.full((2, 4), 2.0))


@pytest.fixture
def voice_dir(tmp_path):
    """A voice folder built here: two espeak-ng clips, one of them allowlisted."""
    (tmp_path / "samantha.wav").write_bytes(espeak_wav("Hello, this is my voice.", 16_000))
    (tmp_path / "unlisted.wav").write_bytes(espeak_wav("Not on the list.", 16_000))
    (tmp_path / "metadata.json").write_text(json.dumps(
        {"samantha.wav": {"description": "test voice"}, "../secret.wav": {}, "/etc/passwd": {}}))
    return tmp_path


def test_references_resolve_only_through_the_allowlist(voice_dir):
    refs = VoiceReferences(voice_dir)
    assert list(refs.allowed()) == ["samantha.wav"]  # listed paths that leave the folder are dropped
    assert refs.resolve("samantha.wav") == (voice_dir / "samantha.wav").resolve()
    for name in ["unlisted.wav", "../secret.wav", "/etc/passwd", str(voice_dir / "samantha.wav")]:
        with pytest.raises(ValueError, match="not in the allowlist"):
            refs.resolve(name)


def test_no_metadata_means_no_references(tmp_path):
    (tmp_path / "a.wav").write_bytes(b"RIFF")
    assert VoiceReferences(tmp_path).allowed() == {}


def test_absent_weights_say_why(tmp_path):
    engine = ChatterboxEngine(ChatterboxSettings(voice_dir=tmp_path), "cpu", cache=tmp_path)
    avail = engine.availability()
    assert not avail.ok and "ResembleAI/chatterbox" in avail.reason
    with pytest.raises(RuntimeError, match="not in the local model cache"):
        engine.load()
