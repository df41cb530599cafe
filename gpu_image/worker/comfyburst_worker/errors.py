"""Errors that end a job; each carries the `JobError.type` it becomes in the done manifest."""

from __future__ import annotations

from typing import Any

from comfyburst.errors import ComfyBurstError
from comfyburst.schema import JobError


class WorkerError(ComfyBurstError):
    """A job cannot go on; `error_type` names why in the manifest."""

    code = "worker"
    error_type = "worker_error"

    def __init__(
        self,
        message: str,
        *,
        node_id: str | None = None,
        node_type: str | None = None,
        details: Any = None,
    ) -> None:
        super().__init__(message, details=details)
        self.node_id = node_id
        self.node_type = node_type

    def job_error(self) -> JobError:
        """The error as the done manifest carries it."""
        return JobError(
            type=self.error_type,
            message=self.message,
            node_id=self.node_id,
            node_type=self.node_type,
            details=self.details,
        )


class ModelFetchError(WorkerError):
    """A model could not be fetched, or its size / sha256 did not match."""

    error_type = "model_fetch"


class InputError(WorkerError):
    """An input image named by the job is missing or ComfyUI refused it."""

    error_type = "input"


class ComfyUnavailable(WorkerError):
    """ComfyUI did not come up, or stopped answering."""

    error_type = "comfyui_unavailable"


class PromptRejected(WorkerError):
    """ComfyUI's validation refused the workflow (`node_errors`)."""

    error_type = "validation_error"


class ExecutionFailed(WorkerError):
    """A node raised while ComfyUI ran the workflow (`execution_error`)."""

    error_type = "execution_error"


class OutputError(WorkerError):
    """An output could not be read from ComfyUI or stored."""

    error_type = "output"
