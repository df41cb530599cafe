"""Fault injection for the ComfyUI stand-in: run-time errors, slow nodes, dropped websockets.

Set from CLI flags or `POST /_standin/faults` (the posted JSON replaces the whole set);
`DELETE /_standin/faults` clears it. JSON shape (every key optional):

    {"execution_error": {"class_type": "ImageInvert", "node_id": null,
                         "message": "...", "exception_type": "RuntimeError"},
     "slow_node_class": "ImageBlur", "slow_node_s": 2.0, "sampler_steps": 10,
     "drop_ws_after_messages": 5, "history_delay_s": 0.0}
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator


class ExecutionErrorFault(BaseModel):
    """Make a node raise at run time, chosen by class type or by node id."""

    model_config = ConfigDict(extra="forbid")

    class_type: str | None = None
    node_id: str | None = None
    message: str = "stand-in injected execution error"
    exception_type: str = "RuntimeError"

    @model_validator(mode="after")
    def _needs_a_target(self) -> ExecutionErrorFault:
        if self.class_type is None and self.node_id is None:
            raise ValueError("execution_error needs class_type or node_id")
        return self

    def matches(self, node_id: str, class_type: str) -> bool:
        """True when this fault applies to the node."""
        return node_id == self.node_id or class_type == self.class_type


class Faults(BaseModel):
    """The active fault set; the default instance injects nothing."""

    model_config = ConfigDict(extra="forbid")

    execution_error: ExecutionErrorFault | None = None
    # The slow class sleeps slow_node_s in total, split over sampler_steps progress steps.
    slow_node_class: str | None = None
    slow_node_s: float = Field(default=0.0, ge=0.0)
    sampler_steps: int = Field(default=0, ge=0, le=100_000)
    # Each client id's socket is closed once after this many messages.
    drop_ws_after_messages: int | None = Field(default=None, ge=1)
    # Widens the real race between execution_success and the history write.
    history_delay_s: float = Field(default=0.0, ge=0.0)

    def progress_steps(self, class_type: str) -> int:
        """How many progress steps a node of this class emits (0 = none)."""
        if class_type != self.slow_node_class:
            return 0
        if self.sampler_steps:
            return self.sampler_steps
        return 10 if self.slow_node_s > 0 else 0

    def step_delay_s(self, class_type: str) -> float:
        """Seconds a node of this class sleeps per progress step."""
        steps = self.progress_steps(class_type)
        return self.slow_node_s / steps if steps else 0.0


class InjectedFault(Exception):
    """Raised by a node that an `execution_error` fault targets."""

    def __init__(self, message: str, type_name: str) -> None:
        super().__init__(message)
        self.type_name = type_name
