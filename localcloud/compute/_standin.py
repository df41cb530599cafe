"""The stand-in as one object: API server + fleet, run in-process in a background thread."""

from __future__ import annotations

from typing import Any

from localcloud.compute._api import handler_class
from localcloud.compute._config import Capacity, ComputeStandinConfig, Fault
from localcloud.compute._fleet import Fleet
from localcloud.compute._http import ServerThread


class ComputeStandin:
    """An emulated Compute Engine answering google-cloud-compute on 127.0.0.1."""

    def __init__(
        self, config: ComputeStandinConfig, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self.config = config
        self.fleet = Fleet(config)
        self._host, self._port = host, port
        self._server: ServerThread | None = None

    def start(self) -> str:
        """Listen (port 0 picks a free one) and return the base URL for `api_endpoint`."""
        if self._server is None:
            self.config.log_dir.mkdir(parents=True, exist_ok=True)
            self._server = ServerThread(handler_class(self.fleet), self._host, self._port)
        return self.base_url

    @property
    def base_url(self) -> str:
        """`http://127.0.0.1:PORT` once started."""
        if self._server is None:
            raise RuntimeError("ComputeStandin is not started")
        return f"http://{self._server.address}"

    @property
    def port(self) -> int:
        """The real listening port."""
        return int(self._server.port) if self._server else 0

    def stop(self) -> None:
        """Stop serving and end every guest and metadata server."""
        if self._server is not None:
            self._server.close()
            self._server = None
        self.fleet.close()

    def add_fault(self, fault: Fault | dict[str, Any]) -> None:
        """Arm one fault (a `Fault` or its dict form)."""
        self.fleet.add_faults([Fault.model_validate(fault)])

    def clear_faults(self) -> None:
        """Disarm all faults."""
        self.fleet.clear_faults()

    def set_capacity(self, capacity: Capacity | dict[str, Any]) -> Capacity:
        """Replace the zone capacity and regional GPU quota in force (see `Capacity`)."""
        return self.fleet.set_capacity(Capacity.model_validate(capacity))

    def reset(self) -> None:
        """Every VM TERMINATED with empty metadata; guests ended; faults cleared."""
        self.fleet.reset()

    def preempt(self, zone: str, name: str) -> bool:
        """Preempt a RUNNING Spot VM now; False when it is not one."""
        return self.fleet.preempt(zone, name)

    def stats(self) -> dict[str, Any]:
        """VMs created, deleted, preempted, started; billed seconds in all."""
        return self.fleet.stats()

    def instances(self) -> list[dict[str, Any]]:
        """Each VM's state (status, guest pid and exit code, metadata host, metadata)."""
        return self.fleet.snapshot()

    def instance(self, name: str) -> dict[str, Any]:
        """One VM's state by name."""
        for item in self.fleet.snapshot():
            if item["name"] == name:
                return item
        raise KeyError(name)

    def __enter__(self) -> ComputeStandin:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()
