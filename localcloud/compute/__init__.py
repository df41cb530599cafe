"""Compute Engine stand-in: the REST subset ComfyBurst calls, VMs as local guest processes."""

from localcloud.compute._config import (
    Capacity,
    ComputeStandinConfig,
    Fault,
    FaultKind,
    GuestSpec,
    InstanceSpec,
)
from localcloud.compute._standin import ComputeStandin

__all__ = [
    "Capacity",
    "ComputeStandin",
    "ComputeStandinConfig",
    "Fault",
    "FaultKind",
    "GuestSpec",
    "InstanceSpec",
]
