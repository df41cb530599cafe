"""The bound `make fair-pool` holds fair share to (localcloud/scenarios/fair_pool.py), pure:
it counts the light callers' busy jobs, not the heavy backlog, and the verdict checks the light
callers and the roomy class only."""

from __future__ import annotations

from localcloud.scenarios.fair_pool import FairPoolConfig, bound_s, summarize, verdict


def _job(caller: str, gpu_class: str, wait_s: float) -> dict[str, object]:
    return {
        "caller": caller,
        "gpu_class": gpu_class,
        "state": "succeeded",
        "created": 0.0,
        "started": wait_s,
        "wait_s": wait_s,
    }


def test_the_bound_grows_with_the_light_jobs_not_the_heavy_backlog() -> None:
    base = FairPoolConfig()
    # 2 light callers with 1 busy job each on 2 VMs: the running round and one more, 3 s each, two
    # reaper periods of 2 s and a 5 s start.
    assert bound_s(base) == 2 * (2.0 + 1.0) + 2 * 2.0 + 5.0
    assert bound_s(FairPoolConfig(heavy_jobs=2000)) == bound_s(base)
    assert bound_s(FairPoolConfig(light_jobs=4)) > bound_s(base)


def test_the_verdict_is_over_when_a_light_caller_or_the_free_class_waits_past_it() -> None:
    jobs = [_job("heavy", "busy", 40.0), _job("light-1", "busy", 3.0), _job("light-2", "free", 2.0)]
    fair = verdict(summarize(jobs), 15.0)
    assert fair["within"] and fair["over"] == {}
    assert set(fair["max_wait_s"]) == {"caller light-1", "caller light-2", "class free"}
    fifo = verdict(summarize([*jobs, _job("light-1", "busy", 24.0)]), 15.0)
    assert not fifo["within"] and fifo["over"] == {"caller light-1": 24.0}
