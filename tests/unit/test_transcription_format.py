from deployments.results import Segment
from graphs.routes.transcription import subtitles

SEGMENTS = [Segment(0, 0.0, 2.5, "Hello there."), Segment(1, 3661.25, 3662.0, "An hour later.")]


def test_srt_cues_are_numbered_with_comma_milliseconds():
    assert subtitles(SEGMENTS, "srt") == (
        "1\n00:00:00,000 --> 00:00:02,500\nHello there.\n\n"
        "2\n01:01:01,250 --> 01:01:02,000\nAn hour later.\n")


def test_vtt_has_its_header_and_dot_milliseconds():
    assert subtitles(SEGMENTS, "vtt") == (
        "WEBVTT\n\n00:00:00.000 --> 00:00:02.500\nHello there.\n\n"
        "01:01:01.250 --> 01:01:02.000\nAn hour later.\n")
