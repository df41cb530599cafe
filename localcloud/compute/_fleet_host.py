"""What the Fleet's mixins (_fleet_pool, _fleet_admin) use of the Fleet: its state and core
transitions. The mixins subclass this base, so they are typed without importing the Fleet (no
arrow back from a part to the whole); `_fleet.Fleet` sets every attribute and implements every
abstract method. (An ABC, not a Protocol: mypy cannot type a protocol's attribute that a
subclass assigns in a method.)"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

from localcloud.compute._config import ComputeStandinConfig
from localcloud.compute._faults import FaultBook
from localcloud.compute._resources import Operation, Vm
from localcloud.compute._templates import TemplateBook


class FleetHost(ABC):
    config: ComputeStandinConfig
    cond: threading.Condition
    _vms: dict[tuple[str, str], Vm]
    _configured: set[tuple[str, str]]
    _templates: TemplateBook
    _ops: dict[str, Operation]
    _faults: FaultBook
    _timers: set[threading.Timer]
    _closing: threading.Event
    _counters: dict[str, int]
    _deleted_billed_s: float
    _preemption_rate_per_s: float
    _preempter: threading.Thread | None

    @abstractmethod
    def _check_project(self, project: str) -> None: ...

    @abstractmethod
    def _vm(self, project: str, zone: str, name: str) -> Vm: ...

    @abstractmethod
    def _deduped(
        self, project: str, request_id: str | None, action: Callable[[], Operation]
    ) -> dict[str, Any]: ...

    @abstractmethod
    def _begin_boot(self, vm: Vm, op: Operation) -> None: ...

    @abstractmethod
    def _power_off_async(self, vm: Vm, ops: list[Operation], grace_s: float) -> None: ...

    @abstractmethod
    def _schedule(self, delay_s: float, vm: Vm | None, action: Callable[[], None]) -> None: ...

    @abstractmethod
    def _set_terminated(self, vm: Vm) -> None: ...
