"""The push-to-talk page (GET /) in a real browser against the shared cluster.

Debian's Chromium, headless, driven by Playwright (never its own browser
download), with a fake microphone that plays an espeak-ng question. The page
exposes what it played on #app (data-samples-played, data-samples-scheduled,
data-playback, data-state). Set UI_SCREENSHOT=docs/ui-turn.png to refresh the
screenshot in the docs.
"""

from __future__ import annotations

import io
import os
import shutil
import time
import wave
from pathlib import Path

import pytest

from tests.conftest import TEST_TOKEN
from tests.speechkit import espeak_wav, normalize

sync_api = pytest.importorskip("playwright.sync_api")

CHROMIUM = "/usr/bin/chromium"
QUESTION = "Tell me a long story about a dragon and a princess."
"""Asks for an answer long enough to still be streaming when the test presses again (a short
factual question got the embedded SmolLM2's whole reply out before the first sentence played)."""
QUESTION_WORDS = {"tell", "long", "story", "dragon", "princess"}
LONG_ANSWER = "You are a storyteller. Answer with a long story of many short sentences."
FLAGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
    "--autoplay-policy=no-user-gesture-required",
]
TIMEOUT_MS = 180_000  # a turn on a busy 2-core machine


@pytest.fixture(scope="module")
def microphone(tmp_path_factory) -> tuple[Path, float]:
    """The fake microphone's file (Chromium loops it) and its length in seconds: the question
    at 48 kHz with silence around it, so a press as long as the file hears it whole."""
    path = tmp_path_factory.mktemp("browser") / "question.wav"
    path.write_bytes(espeak_wav(QUESTION, rate=48_000, pad_s=(0.7, 1.0)))
    with wave.open(io.BytesIO(path.read_bytes())) as w:
        return path, w.getnframes() / w.getframerate()


@pytest.fixture(scope="module")
def browser(microphone):
    if not shutil.which(CHROMIUM):
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM, headless=True,
            args=[*FLAGS, f"--use-file-for-fake-audio-capture={microphone[0]}"])
        yield browser
        browser.close()


def attributes(page) -> dict[str, str]:
    return page.evaluate("({...document.getElementById('app').dataset})")


def test_a_spoken_question_is_answered_aloud_and_a_second_press_interrupts(
    serve_cluster, browser, microphone, tmp_path
):
    _, question_s = microphone
    page = browser.new_page(viewport={"width": 412, "height": 915}, is_mobile=True, has_touch=True)
    requests = []
    page.on("request", lambda r: requests.append(r))
    page.goto(f"{serve_cluster.base_url}/")

    # The server has a token: the page asks for it once and keeps it.
    page.locator("#token-dialog").wait_for()
    page.fill("#token-input", TEST_TOKEN)
    page.click("#token-form button")
    page.locator("#status", has_text="Ready").wait_for(timeout=60_000)
    assert page.evaluate("localStorage.getItem('her-serve.token')") == TEST_TOKEN
    engines = page.locator("#engine option").all_inner_texts()
    assert "piper" in engines and "kokoro" in engines
    page.select_option("#engine", "piper")
    assert page.locator("#voice option").count() >= 1
    page.click("#options summary")
    page.fill("#system-prompt", LONG_ANSWER)
    # Whisper base took a clip cut from the looping fake microphone for Thai when it had to
    # detect the language: say it, as a person who speaks one language would.
    page.select_option("#language", "en")

    # Hold the button (a touch) for the question; let go to send it.
    talk = page.locator("#talk").bounding_box()
    x, y = talk["x"] + talk["width"] / 2, talk["y"] + talk["height"] / 2
    page.mouse.move(x, y)
    page.mouse.down()
    # Two loops of the file: one whole question lies inside the press wherever the loop is
    # (one loop's length, on a busy machine, once caught mostly the gap between loops).
    time.sleep(2 * question_s + 0.3)
    page.mouse.up()

    page.locator("#app[data-playback=playing]").wait_for(timeout=TIMEOUT_MS)
    first = page.locator(".turn").nth(0)
    heard = set(normalize(first.locator(".transcript").inner_text()))
    # The fake microphone loops its file from wherever it is when the press starts, so the
    # question arrives cut around one whole copy and a word may be misheard ("sardaragan"):
    # most words.
    assert len(QUESTION_WORDS & heard) >= 4, heard
    assert first.locator(".reply").inner_text().strip()
    time.sleep(0.5)  # within the first sentence, even a short one

    # Press again (the space bar this time) while it speaks: barge-in.
    speaking = attributes(page)
    assert speaking["stream"] == "open", ("the reply ended before the test could interrupt it",
                                          first.inner_text())
    with page.expect_response(lambda r: r.url.endswith("/v1/voice/cancel")) as cancel:
        page.keyboard.down("Space")
    assert cancel.value.status == 200, cancel.value.text()
    assert cancel.value.json()["cancelled"] is True
    stopped = attributes(page)
    assert stopped["playback"] == "stopped" and stopped["state"] == "recording"
    played, scheduled = int(stopped["samplesPlayed"]), int(stopped["samplesScheduled"])
    assert 0 < played < scheduled  # it played, and was cut before the end
    time.sleep(1.0)
    later = attributes(page)
    assert (later["samplesPlayed"], later["samplesScheduled"]) == (str(played), str(scheduled))
    first.locator(".notes", has_text="Interrupted").wait_for(timeout=30_000)

    # The second press records the new question and sends it when let go (with the server's
    # own short-answer prompt this time, and a short reply: the test waits until the page
    # has played all of it, and SmolLM2 told a story of 300 words in two minutes of audio;
    # both set without moving the focus off the page).
    page.evaluate("document.getElementById('system-prompt').value = ''")
    page.evaluate("document.getElementById('max-tokens').value = '24'")
    time.sleep(question_s)
    with page.expect_request(lambda r: r.url.endswith("/v1/voice/turn")) as second:
        page.keyboard.up("Space")
    uploaded = int(second.value.all_headers()["content-length"])
    assert uploaded > 2 * 16_000 * question_s * 0.8  # the whole press, as 16 kHz int16
    page.locator("#app[data-state=idle][data-turns='2']").wait_for(timeout=TIMEOUT_MS)
    answer = page.locator(".turn").nth(1)
    assert answer.locator(".transcript").inner_text().strip()
    assert 0 < len(answer.locator(".reply").inner_text().split()) <= 24  # max_tokens went along
    assert answer.locator(".timings dt").count() >= 4  # the done frame's stage timings
    assert int(attributes(page)["samplesPlayed"]) > played

    # Nothing came from outside the cluster, and the token never went into a URL.
    assert requests and all(r.url.startswith(serve_cluster.base_url) for r in requests)
    assert not any(TEST_TOKEN in r.url for r in requests)
    api_calls = [r for r in requests if "/v1/" in r.url]
    assert api_calls and all(r.headers.get("authorization") == f"Bearer {TEST_TOKEN}"
                             for r in api_calls)

    page.click("#options summary")  # folded again, for the picture
    shot = Path(os.environ.get("UI_SCREENSHOT") or tmp_path / "ui-turn.png")
    page.screenshot(path=str(shot))
    assert shot.stat().st_size > 0
    page.close()
