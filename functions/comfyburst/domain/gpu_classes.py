"""GPU classes: what a deployment offers (machine, accelerator, Spot or not, zones, price,
templates, limits) and the rules over them. The one place for both.

A class is declared in `COMFYBURST_GPU_CLASSES` (a JSON list, rendered by terraform); with
none declared, one class named "default" is derived from the older `pool_*` settings, so a
deployment from before classes keeps working unchanged. A VM belongs to the class its
`comfyburst-class` label names (the dispatcher sets it on the VMs it creates, and the same
name as the metadata attribute `comfyburst-class`, which is what the VM's own worker can
read: the metadata server serves custom metadata, not labels); a VM without one belongs to
the default class. A job runs on its class only; one that Spot preemptions keep interrupting
moves to the fallback class once its preemptions reach the cap.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from comfyburst.domain.warm import WarmWindow, dump_windows, weekly_cost_usd
from comfyburst.errors import InvalidRequest
from comfyburst.schema import GPU_CLASS_NAME_PATTERN, GpuClassInfo, GpuClassList

# The label on created VMs and the metadata attribute their worker reads: the same name.
CLASS_LABEL = "comfyburst-class"
CLASS_METADATA_KEY = "comfyburst-class"
DERIVED_CLASS_NAME = "default"
REASON_FALLBACK = "preempted {count} times on {spot}; moved to {fallback}"


class GpuClass(BaseModel):
    """One class as the deployment declares it (`COMFYBURST_GPU_CLASSES` entries)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=GPU_CLASS_NAME_PATTERN, description="What jobs ask for")
    machine_type: str = Field(default="", description="e.g. g2-standard-8")
    accelerator_type: str = Field(default="", description="e.g. nvidia-l4")
    accelerator_count: int = Field(default=1, ge=0)
    disk_gb: int = Field(default=0, ge=0)
    spot: bool = False
    zones: list[str] = Field(default_factory=list)
    price_per_hour: float = Field(default=0.0, ge=0, description="USD per VM hour, receipts")
    templates: dict[str, str] = Field(
        default_factory=dict, description="region -> instance template new VMs come from"
    )
    max_vms: int = Field(default=8, ge=0, description="Most VMs of this class, stopped included")
    max_vms_per_zone: int = Field(default=4, ge=0)
    warm: list[WarmWindow] = Field(
        default_factory=list, description="Windows with VMs kept running and idle (domain/warm.py)"
    )

    @model_validator(mode="after")
    def _warm_fits(self) -> GpuClass:
        too_many = [w.vms for w in self.warm if w.vms > self.max_vms]
        if too_many:
            raise ValueError(
                f"class {self.name!r}: a warm window keeps {max(too_many)} VMs up, "
                f"beyond its max_vms {self.max_vms}"
            )
        return self

    def template_for(self, zone: str) -> str | None:
        """The instance template of `zone`'s region; None: this class creates nothing there."""
        return self.templates.get(region_of(zone)) or None

    @property
    def creates(self) -> bool:
        """Whether this class creates VMs at all (it has a template)."""
        return any(self.templates.values())

    def info(self, default: bool = False) -> GpuClassInfo:
        """What a caller may learn of this class (no template paths, no project)."""
        return GpuClassInfo(
            name=self.name,
            machine_type=self.machine_type,
            accelerator_type=self.accelerator_type,
            accelerator_count=self.accelerator_count,
            spot=self.spot,
            price_per_hour=self.price_per_hour,
            regions=sorted({region_of(z) for z in self.zones}),
            default=default,
            warm=dump_windows(self.warm),
            warm_cost_per_week=weekly_cost_usd(self.warm, self.price_per_hour),
        )


def region_of(zone: str) -> str:
    """`us-central1-a` -> `us-central1`."""
    return zone.rsplit("-", 1)[0]


@dataclass(frozen=True)
class GpuClasses:
    """The deployment's classes, checked: unique names, a default, an optional fallback."""

    classes: tuple[GpuClass, ...]
    default: str
    fallback: str | None = None

    def get(self, name: str | None) -> GpuClass | None:
        """The class named `name` (None: the default); None when unknown."""
        wanted = name or self.default
        return next((c for c in self.classes if c.name == wanted), None)

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.classes]

    def listing(self) -> GpuClassList:
        """`GET /gpu-classes`."""
        return GpuClassList(
            gpu_classes=[c.info(default=c.name == self.default) for c in self.classes],
            default=self.default,
            preemption_fallback=self.fallback,
        )

    def resolve(self, requested: str | None, field: str = "options.gpu_class") -> GpuClass:
        """The class a request asks for (None: the default); an unknown name is a 400."""
        found = self.get(requested)
        if found is None:
            raise InvalidRequest(
                f"unknown GPU class {requested!r}; known: {', '.join(self.names)}",
                field=field,
                details={"gpu_classes": self.names},
            )
        return found

    def of_vm(self, labels: Mapping[str, str]) -> str:
        """The class a VM belongs to: its label, else the default class."""
        return labels.get(CLASS_LABEL) or self.default

    def of_job(self, job_class: str | None) -> str:
        """The class a job runs on: the one it records, else the default."""
        return job_class or self.default

    def zones(self) -> list[str]:
        """Every zone of every class, in declaration order (the fleet lists these)."""
        return list(dict.fromkeys(z for c in self.classes for z in c.zones))

    def fallback_after(self, job_class: str | None, preemptions: int, cap: int) -> str | None:
        """The class a job moves to when its preemptions reached `cap` on a Spot class."""
        current = self.get(job_class)
        if self.fallback is None or preemptions < cap or current is None:
            return None
        if not current.spot or current.name == self.fallback:
            return None
        return self.fallback


def build(
    declared: Sequence[GpuClass],
    default_name: str | None,
    fallback_name: str | None,
    *,
    pool_template: str = "",
    pool_zones: Sequence[str] = (),
    pool_max_vms: int = 8,
    pool_max_vms_per_zone: int = 4,
) -> GpuClasses:
    """The checked classes; ValueError with a clear message when the declaration is wrong."""
    classes = tuple(declared) or (
        _derived(pool_template, pool_zones, pool_max_vms, pool_max_vms_per_zone),
    )
    names = [c.name for c in classes]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"gpu_classes: duplicate names: {', '.join(duplicates)}")
    if declared:
        for cls in classes:
            if not cls.zones:
                raise ValueError(f"gpu_classes: class {cls.name!r} has no zones")
            missing = sorted({region_of(z) for z in cls.zones if not cls.template_for(z)})
            if missing:
                raise ValueError(
                    f"gpu_classes: class {cls.name!r} has zones in {', '.join(missing)} "
                    "but no template for that region"
                )
    default = default_name or names[0]
    if default not in names:
        raise ValueError(f"default_gpu_class {default!r} is not a class: {', '.join(names)}")
    if fallback_name:
        fallback = next((c for c in classes if c.name == fallback_name), None)
        if fallback is None:
            raise ValueError(
                f"preemption_fallback_class {fallback_name!r} is not a class: {', '.join(names)}"
            )
        if fallback.spot:
            raise ValueError(
                f"preemption_fallback_class {fallback_name!r} is a Spot class; "
                "it must be a standard one"
            )
    return GpuClasses(classes, default, fallback_name or None)


def _derived(template: str, zones: Sequence[str], max_vms: int, per_zone: int) -> GpuClass:
    """The one class of a deployment that declares none: the `pool_*` settings."""
    regions = {region_of(z) for z in zones}
    return GpuClass(
        name=DERIVED_CLASS_NAME,
        zones=list(zones),
        templates=dict.fromkeys(sorted(regions), template) if template else {},
        max_vms=max_vms,
        max_vms_per_zone=per_zone,
    )


def for_settings(settings: Any) -> GpuClasses:
    """The classes of a settings object: FunctionSettings' checked ones, else derived from
    the `pool_*` attributes (test doubles and older settings objects)."""
    method = getattr(settings, "gpu_class_set", None)
    if callable(method):
        found = method()
        if isinstance(found, GpuClasses):
            return found
    return build(
        [],
        None,
        None,
        pool_template=getattr(settings, "pool_template", "") or "",
        pool_zones=list(getattr(settings, "pool_zones", []) or []),
        pool_max_vms=getattr(settings, "pool_max_vms", 8),
        pool_max_vms_per_zone=getattr(settings, "pool_max_vms_per_zone", 4),
    )
