"""Compute Engine stand-in: the REST subset ComfyBurst calls, VMs as local guest processes."""

from localcloud.compute._config import (
    ComputeStandinConfig,
    Fault,
    FaultKind,
    GuestSpec,
    InstanceSpec,
)
from localcloud.compute._standin import ComputeStandin

__all__ = [
    "ComputeStandin",
    "ComputeStandinConfig",
    "Fault",
    "FaultKind",
    "GuestSpec",
    "InstanceSpec",
]
