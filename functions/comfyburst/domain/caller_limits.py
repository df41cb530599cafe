"""Per-caller limits the deployer sets: most jobs queued, most running at once, which GPU
classes a caller may use, a monthly budget in USD.

Set in `COMFYBURST_CALLER_LIMITS` (terraform: `caller_limits`) as one JSON object, a default
and per-principal overrides (a principal as the API names callers: `key:NAME` or an ID
token's email):

    {"default": {"max_queued": 100, "max_running": 4, "gpu_classes": ["t4", "l4"]},
     "callers": {"key:render-farm": {"max_queued": 2000, "gpu_classes": ["t4", "l4", "h100"]}}}

A field an override gives replaces the default's; one it leaves out (or gives as null, which
is how terraform passes an unset optional attribute) is the default's. A field null in the
default is no limit (every class). To lift a caller above the default, give a larger number
or more classes. Pure rules, no I/O: the submit use case counts the caller's queued jobs.
`max_running` never refuses a submit: a caller at it has its queued jobs wait while others'
start (domain/fair_share.py, applied by the dispatcher and the draining worker's claim).
`monthly_budget_usd` refuses a submit (403 `budget_exceeded`) once the caller's receipts this
month reach it (domain/usage.py); it never stops a job that was admitted.
`max_environments` refuses `POST /environments` for an environment the caller has not asked for
before (403 `environment_limit_reached`) once it asked for that many; asking again for one of
its own always answers.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from comfyburst.errors import EnvironmentLimitReached, GpuClassForbidden, QueueFull

# What a refused submit's Retry-After says: about one reaper period, in which queued jobs
# usually start and leave the queue.
QUEUE_FULL_RETRY_AFTER_S = 60


class Limits(BaseModel):
    """One caller's limits (or the default's); None: no limit (in an override: the default's)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_queued: int | None = Field(
        default=None, ge=0, description="Most of the caller's jobs waiting in `queued` at once"
    )
    max_running: int | None = Field(
        default=None,
        ge=1,
        description="Most of the caller's jobs starting or running at once; more wait queued",
    )
    gpu_classes: list[str] | None = Field(
        default=None, description="The GPU classes the caller may use; null: every class"
    )
    monthly_budget_usd: float | None = Field(
        default=None,
        ge=0,
        allow_inf_nan=False,
        description="USD of receipts a caller may reach in a calendar month (UTC) before its "
        "submits are refused (domain/usage.py); running jobs are never stopped for it",
    )
    max_environments: int | None = Field(
        default=None,
        ge=0,
        description="Most environments of custom-node packs the caller may ask for "
        "(POST /environments); asking again for one it has is always answered",
    )


class CallerLimits(BaseModel):
    """The deployment's limits: a default, and overrides per principal."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    default: Limits = Field(default_factory=Limits)
    callers: dict[str, Limits] = Field(default_factory=dict)

    def __str__(self) -> str:
        """The JSON form, as the setting is written (`{}`: no limits)."""
        return self.model_dump_json(exclude_defaults=True)

    def for_caller(self, caller: str | None) -> Limits:
        """The default with the caller's override laid over it (the fields it gives)."""
        override = self.callers.get(caller) if caller is not None else None
        if override is None:
            return self.default
        given = {k: v for k, v in override.model_dump().items() if v is not None}
        return self.default.model_copy(update=given)

    def class_names(self) -> set[str]:
        """Every class any entry names (checked against the deployment's classes at load)."""
        entries = [self.default, *self.callers.values()]
        return {name for entry in entries for name in entry.gpu_classes or []}

    def max_running(self, caller: str | None) -> int | None:
        """The caller's `max_running` (None: no limit); domain/fair_share.py's `max_running`."""
        return self.for_caller(caller).max_running

    def running_limits(self) -> dict[str, int]:
        """{principal: max_running}, `*` for the default; what a VM is told (DeploymentConfig)."""
        table = {} if self.default.max_running is None else {"*": self.default.max_running}
        for caller in self.callers:
            limit = self.for_caller(caller).max_running
            if limit is not None:
                table[caller] = limit
        return table

    def limits_queue(self, caller: str | None) -> bool:
        """Whether a submit of this caller needs its queued jobs counted."""
        return self.for_caller(caller).max_queued is not None


def check_class(limits: Limits, gpu_class: str) -> None:
    """403 `gpu_class_forbidden` when the caller may not use `gpu_class`."""
    if limits.gpu_classes is not None and gpu_class not in limits.gpu_classes:
        raise GpuClassForbidden(
            f"this caller may not use GPU class {gpu_class!r}; allowed: "
            f"{', '.join(limits.gpu_classes) or 'none'}",
            gpu_class=gpu_class,
            allowed=list(limits.gpu_classes),
        )


def check_queue(limits: Limits, queued: int) -> None:
    """429 `queue_full` when `queued` of the caller's jobs wait already (`queued` counts this
    process's submits of the caller that are being admitted too)."""
    if limits.max_queued is not None and queued >= limits.max_queued:
        raise QueueFull(
            f"this caller has {queued} jobs queued, the most it may have is {limits.max_queued}; "
            "retry once some have started",
            max_queued=limits.max_queued,
            retry_after_s=QUEUE_FULL_RETRY_AFTER_S,
        )


def check_environments(limits: Limits, asked: int) -> None:
    """403 `environment_limit_reached` when the caller asked for `asked` environments already
    and may ask for no more (call it only for an environment new to the caller)."""
    if limits.max_environments is not None and asked >= limits.max_environments:
        raise EnvironmentLimitReached(
            f"this caller has asked for {asked} environments, the most it may have is "
            f"{limits.max_environments}; reuse one of them (`GET /environments`)",
            max_environments=limits.max_environments,
            environments=asked,
        )


def running_hold(limits: Limits, running: int) -> str | None:
    """Why a new job of a caller with `running` jobs starting or running waits in `queued`
    instead of starting (None: it may start). Never a refusal."""
    if limits.max_running is not None and running >= limits.max_running:
        return (
            f"this caller has {running} jobs running, the most it may have at once is "
            f"{limits.max_running}; it starts when one ends"
        )
    return None
