"""Admission: a TTS request is shed at once when the sentences in flight would make it
wait past the deadline at the service rate the gateway measured."""

from __future__ import annotations

import time

import pytest

from deployments.settings import SpeechSettings
from graphs.failover import ServiceMeter, TTSCalls
from graphs.http import APIError
from graphs.routing import RoutingState


def serve(meter: ServiceMeter, sentences: int, each_s: float) -> None:
    """``sentences`` completions, one every ``each_s``, with the deployment busy throughout."""
    for _ in range(sentences):
        meter.started()
    for _ in range(sentences):
        time.sleep(each_s)
        meter.finished(completed=True)


def test_the_rate_is_measured_while_busy_not_over_idle_time():
    meter = ServiceMeter()
    serve(meter, 5, 0.02)
    time.sleep(0.3)  # idle: must not lower the rate
    serve(meter, 5, 0.02)
    assert meter.rate_per_s == pytest.approx(50, rel=0.5)
    assert meter.in_flight == 0 and meter.wait_s() == 0.0


def test_wait_is_the_work_in_flight_at_that_rate():
    meter = ServiceMeter()
    serve(meter, 5, 0.02)
    for _ in range(10):
        meter.started()
    assert meter.wait_s() == pytest.approx(10 / meter.rate_per_s)


def test_unmeasured_deployment_admits_one_request_at_a_time():
    calls = TTSCalls(SpeechSettings(admission_wait_s=1.0), RoutingState())
    calls.admit("KokoroTTS")  # nothing in flight
    calls.meter("KokoroTTS").started()
    with pytest.raises(APIError) as err:
        calls.admit("KokoroTTS")
    assert err.value.status == 503 and err.value.headers["Retry-After"] == "1"


def test_requests_past_the_deadline_are_shed_with_retry_after():
    calls = TTSCalls(SpeechSettings(admission_wait_s=1.0), RoutingState())
    meter = calls.meter("KokoroTTS")
    serve(meter, 3, 0.1)  # about 10 sentences/s
    for _ in range(5):  # half a second of work ahead
        meter.started()
    calls.admit("KokoroTTS")
    for _ in range(30):  # three seconds ahead
        meter.started()
    with pytest.raises(APIError) as err:
        calls.admit("KokoroTTS")
    assert err.value.status == 503 and err.value.error.type == "overloaded"
    assert int(err.value.headers["Retry-After"]) >= 2
    for _ in range(35):  # the work drains: admitted again
        meter.finished(completed=False)
    calls.admit("KokoroTTS")


def test_failed_sentences_leave_the_count():
    meter = ServiceMeter()
    meter.started()
    meter.finished(completed=False)
    assert meter.in_flight == 0 and meter.rate_per_s is None


def test_many_refusals_a_second_send_callers_back_spread_over_ten_seconds():
    """The first are sent back as late as the service rate needs; once that passes the
    10 s cap, callers are spread evenly over 1-10 s, so a crowd does not return at once."""
    calls = TTSCalls(SpeechSettings(admission_wait_s=1.0), RoutingState())
    meter = calls.meter("KokoroTTS")
    serve(meter, 3, 0.1)  # about 10 sentences/s
    for _ in range(12):  # 1.2 s of work ahead
        meter.started()
    retries = []
    for _ in range(200):  # 200 refusals within a second
        with pytest.raises(APIError) as err:
            calls.admit("KokoroTTS")
        retries.append(int(err.value.headers["Retry-After"]))
    ramp = retries[:20]  # ten sentences/s: the n-th refusal this second comes back in n/10 s
    assert ramp[0] == 1 and ramp == sorted(ramp) and max(retries) == 10
    later = retries[100:]  # every second from 1 to 10 gets a tenth of them
    assert {n: later.count(n) for n in range(1, 11)} == {n: 10 for n in range(1, 11)}
