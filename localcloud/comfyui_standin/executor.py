"""Runs queued prompts one at a time and emits the real server's websocket message sequence."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import traceback
from collections.abc import Callable
from typing import Any

from ._graph import execution_order, is_link, signatures
from ._logs import LogBuffer, executed_line
from ._paths import Dirs, UnsafePathError, resolve_annotated
from .faults import Faults, InjectedFault
from .history import History
from .nodes import NODE_FUNCTIONS, NodeContext, NodeFunction, NodeResult
from .previews import legacy_frame, metadata_frame, preview_image, step_metadata
from .prompt_queue import PromptQueue, QueueItem
from .ws_hub import WsHub

log = logging.getLogger(__name__)

# Without a client_id the real server still broadcasts these (and nothing else of a run).
_BROADCAST_WITHOUT_CLIENT = frozenset({"progress_state", "progress", "execution_interrupted"})


class _Interrupted(Exception):
    def __init__(self, node_id: str) -> None:
        super().__init__(node_id)
        self.node_id = node_id


class _NodeFailed(Exception):
    def __init__(self, node_id: str, inputs: dict[str, Any], cause: BaseException) -> None:
        super().__init__(str(cause))
        self.node_id, self.inputs, self.cause = node_id, inputs, cause


def _now_ms() -> int:
    return int(time.time() * 1000)


class Executor:
    """The single execution slot: takes prompts from the queue, caches node outputs."""

    def __init__(
        self,
        queue: PromptQueue,
        history: History,
        hub: WsHub,
        dirs: Dirs,
        object_info: Callable[[], dict[str, Any]],
        faults: Callable[[], Faults],
        preview_method: str = "none",
        functions: dict[str, NodeFunction] | None = None,
        *,
        logs: LogBuffer,
    ) -> None:
        self._queue, self._history, self._hub, self._dirs = queue, history, hub, dirs
        self.logs = logs  # what it prints, as the real server does (_logs.py)
        # The core nodes and those of custom-node packs (_custom_nodes.py).
        self._functions = {**NODE_FUNCTIONS, **(functions or {})}
        self._object_info, self._faults = object_info, faults
        self.previews = preview_method != "none"
        self._cache: dict[str, NodeResult] = {}
        self._interrupt = asyncio.Event()

    def interrupt(self, prompt_id: str | None = None) -> None:
        """Interrupt the running prompt (only if it is `prompt_id`, when given)."""
        running = self._queue.running
        if running is not None and prompt_id in (None, running.prompt_id):
            self._interrupt.set()

    def free(self) -> None:
        """Drop cached node outputs (`POST /free` with free_memory)."""
        self._cache.clear()

    async def run_forever(self) -> None:
        """Execute prompts until cancelled."""
        while True:
            item = await self._queue.get()
            try:
                await _Run(self, item).execute()
            except Exception:
                log.exception("stand-in executor failed on prompt %s", item.prompt_id)
                self._queue.task_done()


class _Run:
    """One prompt's execution and its messages."""

    def __init__(self, executor: Executor, item: QueueItem) -> None:
        self.ex, self.item, self.prompt_id = executor, item, item.prompt_id
        self.prompt = item.prompt
        self.messages: list[list[Any]] = []
        self.progress: dict[str, dict[str, Any]] = {}
        self.executed: list[str] = []
        self.values: dict[str, tuple[Any, ...]] = {}
        self.ui_outputs: dict[str, Any] = {}
        self.meta: dict[str, Any] = {}

    def emit(self, event: str, data: dict[str, Any], record: bool = False) -> None:
        client_id = self.item.client_id
        if client_id is not None:
            self.ex._hub.send(event, data, client_id)
        elif event in _BROADCAST_WITHOUT_CLIENT:
            self.ex._hub.broadcast(event, data)
        if record:
            self.messages.append([event, data])

    def set_progress(self, node_id: str, state: str, value: float, maximum: float) -> None:
        self.progress[node_id] = {
            "value": value,
            "max": maximum,
            "state": state,
            "node_id": node_id,
            "prompt_id": self.prompt_id,
            "display_node_id": node_id,
            "parent_node_id": None,
            "real_node_id": node_id,
        }
        nodes = {key: dict(entry) for key, entry in self.progress.items()}
        self.emit("progress_state", {"prompt_id": self.prompt_id, "nodes": nodes})

    async def execute(self) -> None:
        started = time.perf_counter()
        self.ex._interrupt.clear()
        self.emit("execution_start", {"prompt_id": self.prompt_id, "timestamp": _now_ms()}, True)
        sigs = signatures(self.prompt, self._volatile_key)
        cached = [n for n in self.prompt if sigs.get(n) in self.ex._cache]
        data = {"nodes": cached, "prompt_id": self.prompt_id, "timestamp": _now_ms()}
        self.emit("execution_cached", data, True)
        status_str = "success"
        try:
            for node_id in execution_order(self.prompt, self.item.outputs_to_execute):
                await self._node(node_id, sigs.get(node_id), node_id in cached)
        except _Interrupted as stop:
            status_str = "error"
            self.ex.logs.line("Processing interrupted")
            self.emit("execution_interrupted", self._stop_data(stop.node_id), True)
        except _NodeFailed as failure:
            status_str = "error"
            self._print_failure(failure.cause)
            self.emit("execution_error", self._error_data(failure), True)
        else:
            self.emit(
                "execution_success", {"prompt_id": self.prompt_id, "timestamp": _now_ms()}, True
            )
        self._keep_cache(sigs)
        delay_s = self.ex._faults().history_delay_s
        if delay_s:
            await asyncio.sleep(delay_s)
        self.ex._history.record(self.item, self.ui_outputs, self.meta, status_str, self.messages)
        self.ex._queue.task_done()
        self.emit("executing", {"node": None, "prompt_id": self.prompt_id})
        self.ex.logs.line(executed_line(time.perf_counter() - started))

    def _print_failure(self, cause: BaseException) -> None:
        """The real server's two writes for a node that raised: the message, the traceback."""
        self.ex.logs.line(f"!!! Exception during processing !!! {cause}")
        trace = "".join(traceback.format_exception(type(cause), cause, cause.__traceback__))
        self.ex.logs.line(trace)

    async def _node(self, node_id: str, sig: str | None, is_cached: bool) -> None:
        if is_cached and sig is not None:
            result = self.ex._cache[sig]
            self.values[node_id] = result.outputs
            if result.ui is not None:
                self._show(node_id, result.ui)
                self.set_progress(node_id, "finished", 1.0, 1.0)
            return
        self.set_progress(node_id, "running", 0.0, 1.0)
        data = {"node": node_id, "display_node": node_id, "prompt_id": self.prompt_id}
        self.emit("executing", data)
        if self.ex._interrupt.is_set():
            raise _Interrupted(node_id)
        class_type = self.prompt[node_id]["class_type"]
        inputs: dict[str, Any] = {}
        steps = await self._slow_steps(node_id, class_type)
        try:
            inputs = self._inputs(node_id)
            result = await self._call(node_id, class_type, inputs)
        except Exception as exc:
            raise _NodeFailed(node_id, inputs, exc) from exc
        if sig is not None:
            self.ex._cache[sig] = result
        self.values[node_id] = result.outputs
        if result.ui is not None:
            self._show(node_id, result.ui)
        self.set_progress(node_id, "finished", steps or 1.0, steps or 1.0)
        self.executed.append(node_id)

    def _show(self, node_id: str, ui: dict[str, Any]) -> None:
        self.emit(
            "executed",
            {"node": node_id, "display_node": node_id, "output": ui, "prompt_id": self.prompt_id},
        )
        self.ui_outputs[node_id] = ui
        self.meta[node_id] = {
            "node_id": node_id,
            "display_node": node_id,
            "parent_node": None,
            "real_node_id": node_id,
        }

    async def _slow_steps(self, node_id: str, class_type: str) -> int:
        """Fault: sleep and report progress steps; interruptible between and during steps."""
        faults = self.ex._faults()
        steps, delay_s = faults.progress_steps(class_type), faults.step_delay_s(class_type)
        for step in range(1, steps + 1):
            if delay_s:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.ex._interrupt.wait(), timeout=delay_s)
            if self.ex._interrupt.is_set():
                raise _Interrupted(node_id)
            self.set_progress(node_id, "running", step, steps)
            data = {"value": step, "max": steps, "prompt_id": self.prompt_id, "node": node_id}
            self._step_preview(node_id, step, steps, data)
        return steps

    def _step_preview(self, node_id: str, step: int, steps: int, progress: dict[str, Any]) -> None:
        """The step's `progress`, with its preview frame where previews are on: the metadata
        form goes first, the legacy form after (the order the real server keeps)."""
        if not self.ex.previews:
            self.emit("progress", progress)
            return
        client_id = self.item.client_id
        image = preview_image(step, steps)
        if self.ex._hub.supports(client_id, "supports_preview_metadata"):
            frame = metadata_frame(image, step_metadata(node_id, self.prompt_id))
            self.ex._hub.send_bytes(frame, client_id)
            self.emit("progress", progress)
        else:
            self.emit("progress", progress)
            self.ex._hub.send_bytes(legacy_frame(image), client_id)

    async def _call(self, node_id: str, class_type: str, inputs: dict[str, Any]) -> NodeResult:
        fault = self.ex._faults().execution_error
        if fault is not None and fault.matches(node_id, class_type):
            raise InjectedFault(fault.message, fault.exception_type)
        ctx = NodeContext(self.ex._dirs, self.prompt, self.item.extra_data, node_id)
        declared = self._declared_inputs(class_type)
        kwargs = {name: value for name, value in inputs.items() if name in declared}
        return await asyncio.to_thread(self.ex._functions[class_type], ctx, **kwargs)

    def _declared_inputs(self, class_type: str) -> set[str]:
        spec = self.ex._object_info().get(class_type, {}).get("input", {})
        return set(spec.get("required", {})) | set(spec.get("optional", {}))

    def _inputs(self, node_id: str) -> dict[str, Any]:
        resolved = {}
        for name, value in self.prompt[node_id].get("inputs", {}).items():
            resolved[name] = self.values[value[0]][value[1]] if is_link(value) else value
        return resolved

    def _volatile_key(self, node_id: str) -> Any:
        """Extra cache key for nodes whose result depends on more than inputs (file contents)."""
        node = self.prompt[node_id]
        if node.get("class_type") != "LoadImage":
            return None
        try:
            stat = resolve_annotated(self.ex._dirs, str(node["inputs"].get("image"))).stat()
        except (OSError, UnsafePathError, KeyError):
            return "missing"
        return [stat.st_mtime_ns, stat.st_size]

    def _keep_cache(self, sigs: dict[str, str]) -> None:
        """Like the real default cache: keep only what this prompt used or produced."""
        wanted = set(sigs.values())
        self.ex._cache = {sig: res for sig, res in self.ex._cache.items() if sig in wanted}

    def _stop_data(self, node_id: str) -> dict[str, Any]:
        return {
            "prompt_id": self.prompt_id,
            "node_id": node_id,
            "node_type": self.prompt[node_id]["class_type"],
            "executed": list(self.executed),
            "timestamp": _now_ms(),
        }

    def _error_data(self, failure: _NodeFailed) -> dict[str, Any]:
        cause = failure.cause
        type_name = cause.type_name if isinstance(cause, InjectedFault) else type(cause).__name__
        data = self._stop_data(failure.node_id)
        timestamp = data.pop("timestamp")
        data.update(
            exception_message=f"{cause}\n",
            exception_type=type_name,
            traceback=traceback.format_tb(cause.__traceback__),
            current_inputs=self._describe_inputs(failure),
            current_outputs=[*self.values, failure.node_id],
            timestamp=timestamp,
        )
        return data

    def _describe_inputs(self, failure: _NodeFailed) -> dict[str, list[Any]]:
        class_type = self.prompt[failure.node_id]["class_type"]
        hidden = self.ex._object_info().get(class_type, {}).get("input", {}).get("hidden", {})
        described = {name: [_describe(value)] for name, value in failure.inputs.items()}
        if "prompt" in hidden:
            described["prompt"] = [str(self.prompt)]
        if "extra_pnginfo" in hidden:
            described["extra_pnginfo"] = [self.item.extra_data.get("extra_pnginfo")]
        return described


def _describe(value: Any) -> Any:
    """JSON-safe form of an input value, as the real server reports `current_inputs`."""
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return repr(value)
