"""End to end on the shared local cloud: a job that boots its VM comes back from `GET
/jobs/{id}` with every phase in order (RUNNING read from Compute by the done-flag trigger) and
a receipt whose parts add up."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest

from comfyburst.client import ApiClient, ClientSettings
from tests._e2e_support import e2e_env, invert_workflow

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

BOOT_ORDER = ("requested_at", "running_at", "guest_booted_at", "agent_up_at", "claimed_at")
RUN_ORDER = ("claimed_at", "models_ready_at", "first_step_at", "done_at")


@pytest.fixture
def localcloud_env(request: pytest.FixtureRequest) -> dict[str, str]:
    return e2e_env(request)


def _times(phases: dict[str, Any], names: tuple[str, ...]) -> list[datetime]:
    missing = [n for n in names if phases.get(n) is None]
    assert not missing, f"phases lack {missing}: {phases}"
    return [datetime.fromisoformat(phases[n]) for n in names]


def test_a_booted_job_shows_every_phase_and_a_receipt_that_adds_up(
    localcloud_env: dict[str, str],
) -> None:
    client = ApiClient(ClientSettings(api_url=localcloud_env["COMFYBURST_API_URL"], auth="none"))
    submitted = client.submit({"workflow": invert_workflow(), "options": {"timeout_s": 240}})
    done = client.wait(submitted["job_id"], poll_s=0.3, timeout_s=240)
    assert done["state"] == "succeeded", done.get("error")
    job = client.get(submitted["job_id"])
    phases = job["phases"]
    boot = _times(phases, BOOT_ORDER)
    # The guest starts when the stand-in marks the VM RUNNING: its boot is at or after it
    # (to the millisecond of the two clocks' rounding).
    assert boot[0] <= boot[1] and boot[2:] == sorted(boot[2:])
    assert (boot[2] - boot[1]).total_seconds() > -0.5
    assert _times(phases, RUN_ORDER) == sorted(_times(phases, RUN_ORDER))
    assert phases["comfyui_ready_at"] is not None and phases["idle_since_at"] is None
    receipt = job["receipt"]
    assert receipt["gpu_class"] == "default" and receipt["idle_s"] == 0
    assert receipt["boot_s"] > 0 and receipt["run_s"] > 0
    assert receipt["billed_s"] == pytest.approx(receipt["boot_s"] + receipt["run_s"], abs=0.01)
    assert receipt["cost_usd"] == pytest.approx(
        receipt["billed_s"] * receipt["price_per_hour"] / 3600, abs=1e-6
    )
