"""Audio in and out of the speech engines: decode, resample, encode.

Engines work on mono float32 at their own rate; everything a client sends or
receives passes through here. Every refusal is a ValueError whose message can
go back to the client as is.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import soundfile as sf
import soxr

MIN_RATE, MAX_RATE = 8_000, 192_000

# Formats a client may ask a TTS route for, with their media types. mp3 comes
# from libsndfile (>= 1.1 has an MPEG encoder), so no ffmpeg is needed.
MEDIA_TYPES = {
    "wav": "audio/wav",
    "pcm": "audio/pcm",
    "flac": "audio/flac",
    "opus": "audio/ogg",
    "mp3": "audio/mpeg",
}
_SF_FORMATS = {"wav": ("WAV", "PCM_16"), "flac": ("FLAC", "PCM_16"),
               "opus": ("OGG", "OPUS"), "mp3": ("MP3", "MPEG_LAYER_III")}
# Opus encodes only these rates; other rates are resampled to 48 kHz for it.
_OPUS_RATES = (8_000, 12_000, 16_000, 24_000, 48_000)


@dataclass
class Audio:
    samples: np.ndarray
    """Mono float32 in [-1, 1]."""
    rate: int

    @property
    def seconds(self) -> float:
        return len(self.samples) / self.rate


def check_rate(rate: int) -> int:
    if not MIN_RATE <= int(rate) <= MAX_RATE:
        raise ValueError(f"sample rate {rate} Hz is outside {MIN_RATE}-{MAX_RATE} Hz")
    return int(rate)


def decode(
    data: bytes, pcm_rate: int | None = None, max_bytes: int = 25 * 1024 * 1024,
    max_seconds: float = 600.0,
) -> Audio:
    """WAV, FLAC, OGG (or MP3) by content; raw int16 little-endian PCM when ``pcm_rate`` is given."""
    if not data:
        raise ValueError("audio is empty (zero bytes)")
    if len(data) > max_bytes:
        raise ValueError(f"audio is {len(data)} bytes; the limit is {max_bytes} bytes")
    if pcm_rate is not None:
        rate = check_rate(pcm_rate)
        if len(data) % 2:
            raise ValueError("raw PCM must be 16-bit: an odd number of bytes was sent")
        samples = np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0
    else:
        try:
            with sf.SoundFile(io.BytesIO(data)) as f:
                if f.frames > max_seconds * f.samplerate:
                    raise ValueError(f"audio is {f.frames / f.samplerate:.1f} s; the limit is {max_seconds:.0f} s")
                rate = check_rate(f.samplerate)
                samples = f.read(dtype="float32", always_2d=True).mean(axis=1)
        except sf.LibsndfileError as exc:
            raise ValueError(
                f"cannot decode audio ({exc.error_string}); send WAV, FLAC, OGG or "
                "raw 16-bit PCM with its sample rate"
            ) from None
    if len(samples) == 0:
        raise ValueError("audio has no samples")
    if len(samples) > max_seconds * rate:
        raise ValueError(f"audio is {len(samples) / rate:.1f} s; the limit is {max_seconds:.0f} s")
    return Audio(np.ascontiguousarray(samples, dtype=np.float32), rate)


def resample(samples: np.ndarray, rate: int, target: int) -> np.ndarray:
    """soxr's high-quality resampler (anti-aliased, so 24 -> 16 kHz and 8 -> 16 kHz are clean)."""
    if rate == target or len(samples) == 0:
        return samples
    return soxr.resample(samples, rate, target, quality="HQ").astype(samples.dtype, copy=False)


def to_int16(samples: np.ndarray) -> np.ndarray:
    return (np.clip(samples, -1.0, 1.0) * 32767.0).astype("<i2")


def encode(pcm: np.ndarray, rate: int, fmt: str) -> bytes:
    """A whole clip as ``fmt`` (one of MEDIA_TYPES); ``pcm`` is int16 mono."""
    if fmt == "pcm":
        return pcm.astype("<i2").tobytes()
    if fmt not in _SF_FORMATS:
        raise ValueError(f"unknown audio format {fmt!r}; one of {sorted(MEDIA_TYPES)}")
    container, subtype = _SF_FORMATS[fmt]
    if fmt == "opus" and rate not in _OPUS_RATES:
        pcm = to_int16(resample(pcm.astype(np.float32) / 32768.0, rate, 48_000))
        rate = 48_000
    buf = io.BytesIO()
    sf.write(buf, pcm, rate, format=container, subtype=subtype)
    return buf.getvalue()


def wav_header(rate: int) -> bytes:
    """A 16-bit mono WAV header of unknown length, so WAV can stream before the end is known.

    The sizes are 0xFFFFFFFF, which players (and soundfile) read as "until end of stream".
    """
    byte_rate = rate * 2
    return (
        b"RIFF" + (0xFFFFFFFF).to_bytes(4, "little") + b"WAVE"
        + b"fmt " + (16).to_bytes(4, "little") + (1).to_bytes(2, "little")
        + (1).to_bytes(2, "little") + rate.to_bytes(4, "little")
        + byte_rate.to_bytes(4, "little") + (2).to_bytes(2, "little")
        + (16).to_bytes(2, "little") + b"data" + (0xFFFFFFFF).to_bytes(4, "little")
    )


class StreamEncoder:
    """Turns int16 chunks into the bytes of one response in ``fmt``.

    pcm and wav go out chunk by chunk (wav behind an open-ended header).
    Compressed formats cannot be cut and glued safely (an MP3's Xing frame
    states its length; FLAC has one header), so they are encoded once at the end.
    """

    STREAMABLE = ("pcm", "wav")

    def __init__(self, fmt: str, rate: int):
        if fmt not in MEDIA_TYPES:
            raise ValueError(f"unknown audio format {fmt!r}; one of {sorted(MEDIA_TYPES)}")
        self.fmt, self.rate = fmt, rate
        self._held: list[np.ndarray] = []

    def start(self) -> bytes:
        return wav_header(self.rate) if self.fmt == "wav" else b""

    def add(self, pcm: np.ndarray) -> bytes:
        if self.fmt in self.STREAMABLE:
            return pcm.astype("<i2").tobytes()
        self._held.append(pcm)
        return b""

    def finish(self) -> bytes:
        if self.fmt in self.STREAMABLE:
            return b""
        pcm = np.concatenate(self._held) if self._held else np.zeros(0, "<i2")
        return encode(pcm, self.rate, self.fmt)
