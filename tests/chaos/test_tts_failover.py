"""TTS while panda dies and comes back (issue 5's acceptance figures, shorter runs).

The load is 70 % of titan's capacity alone, measured first (``failover_rate``), at
most 10 requests/s. Order matters: the node-kill test leaves panda dead, the return
test brings it back, the mid-stream test kills it again.
"""

from __future__ import annotations

import time

import ray

from bench.failover import TTS_DEPLOYMENT, paced_load, run_scenario


def replica_actors(deployment: str) -> list[str]:
    return [
        a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
        if f"#{deployment}#" in a["name"]
    ]


def test_killing_one_replica_process_loses_nothing(chaos_box, failover_rate):
    load = paced_load(chaos_box.base_url, chaos_box.headers(), failover_rate, 12)
    load.wait_until(4)
    victim = replica_actors(TTS_DEPLOYMENT)[0]
    ray.kill(ray.get_actor(victim, namespace="serve"), no_restart=True)
    outcomes = load.join()
    failed = [o.status for o in outcomes if not o.ok]
    assert len(outcomes) >= 0.9 * failover_rate * 12 and failed == []


def max_gap_s(rate_hz: float) -> float:
    """The longest allowed pause between answers: 1 s, or eight requests' spacing where the
    machine is too slow for titan alone to carry the 10/s these bounds were written for
    (on a slow 2-core machine titan alone, on its one pinned core, served 2.6-4/s). A
    request caught on the dead node is hedged to titan after 1.5x the recent p90 wait, and
    then served there: both scale with the service time, not with a fixed second."""
    return max(1.0, 8 / rate_hz)


def test_panda_hard_kill_under_load_loses_nothing(chaos_box, failover_rate):
    """The failover rate for 30 s, panda SIGKILLed at 8 s: no request fails, no long gap."""
    s = run_scenario(chaos_box, rate_hz=failover_rate, duration_s=30, kill_at_s=8, back_at_s=None)
    assert s.sent >= 0.98 * failover_rate * 30
    assert s.failed == 0, (s.failures, s.failed_at_s)
    assert s.longest_gap_s <= max_gap_s(failover_rate), s


def test_traffic_returns_to_panda_after_it_rejoins(chaos_box, failover_rate):
    """Panda is started again under the failover rate: nothing fails, no long gap, and
    panda serves again within 15 s of starting, or 30 s where the machine is slow (as for
    the gaps: a node on one pinned core of a slow machine took 15.7-21 s to start)."""
    load = paced_load(chaos_box.base_url, chaos_box.headers(), failover_rate, 25)
    back_at = load.wait_until(2)
    chaos_box.restart("panda")
    outcomes = load.join()
    assert [o for o in outcomes if not o.ok] == []
    done = sorted(o.done_at for o in outcomes)
    assert max(b - a for a, b in zip(done, done[1:])) <= max_gap_s(failover_rate)
    on_panda = [o.done_at - back_at for o in outcomes if o.host == "panda"]
    assert on_panda and min(on_panda) <= (15 if failover_rate >= 10 else 30), on_panda


def test_node_killed_mid_stream_client_gets_the_whole_speech(chaos_box, tmp_path):
    """A streamed /v1/audio/speech (wav) on panda; panda is SIGKILLed after the first
    audio arrived. The stream continues on titan: every sentence is heard once, in order
    (checked by ear: Whisper base transcribes what the client received)."""
    import threading

    from deployments import audio
    from deployments.settings import WhisperSettings
    from deployments.stt import WhisperEngine
    from tests.speechkit import SENTENCES, wer

    text = " ".join(SENTENCES * 2)
    got, first, done = [], threading.Event(), {}

    def listen():
        with chaos_box.client() as client, client.stream("POST", "/v1/audio/speech", json={
                "model": "piper", "input": text, "voice": "alloy", "response_format": "wav"}) as r:
            done["status"], done["host"] = r.status_code, r.headers.get("x-served-by")
            for chunk in r.iter_bytes():
                got.append((time.monotonic(), chunk))
                first.set()

    listener = threading.Thread(target=listen)
    listener.start()
    assert first.wait(60)
    killed_at = time.monotonic()
    chaos_box.kill("panda")  # signals: main thread only
    listener.join(120)
    assert done == {"status": 200, "host": "panda"}
    assert got[-1][0] > killed_at  # the kill did land mid-stream
    whisper = WhisperEngine(WhisperSettings(), "cpu", data_dir=tmp_path)
    whisper.load()
    heard = whisper.transcribe(audio.decode(b"".join(c for _, c in got)), language="en").text
    assert wer(text, heard) <= 0.15, heard
