"""TTS keeps answering while panda dies and comes back (issue 5's acceptance figures)."""

from __future__ import annotations

import asyncio

import ray

from bench.failover import TTS_DEPLOYMENT, drive, run_scenario


def test_panda_hard_kill_under_load_loses_nothing(chaos_box):
    s = run_scenario(chaos_box, rate_hz=10, duration_s=30)
    assert s.sent >= 290
    assert s.failed == 0, s.failures
    assert s.longest_gap_s <= 1.0
    assert s.back_on_panda_s is not None and s.back_on_panda_s <= 15


def replica_actors(deployment: str) -> list[str]:
    return [
        a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
        if f"#{deployment}#" in a["name"]
    ]


def test_killing_one_replica_process_loses_nothing(chaos_box):
    async def scenario():
        load = asyncio.create_task(drive(chaos_box.base_url, chaos_box.headers(), 10, 12))
        await asyncio.sleep(4)
        victim = replica_actors(TTS_DEPLOYMENT)[0]
        ray.kill(ray.get_actor(victim, namespace="serve"), no_restart=True)
        return await load

    outcomes = asyncio.run(scenario())
    failed = [o.status for o in outcomes if not o.ok]
    assert len(outcomes) >= 110 and failed == []
