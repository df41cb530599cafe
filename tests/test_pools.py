"""Thread pools are built by the entry points (wiring.io_pool) and passed in; none is created
when a module is imported, and no module uses another one's pool."""

from __future__ import annotations

import ast
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from comfyburst.api import build_api_deps
from comfyburst.preflight import Catalogue
from comfyburst.services.dispatch import Dispatcher
from tests._api_support import make_settings
from tests.fakes import (
    FakeFleet,
    FakeSigner,
    FixedClock,
    InMemoryBlobStore,
    InMemoryJobStore,
    InMemoryPublisher,
)
from tests.test_dispatch import make_jobs

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ["functions/comfyburst", "functions/main.py", "gpu_image/worker/comfyburst_worker"]
POOLS = {"ThreadPoolExecutor", "ProcessPoolExecutor"}


def _import_time_pools(path: Path) -> list[str]:
    """Pool constructions in statements that run on import (module and class bodies)."""
    found: list[str] = []
    todo: list[ast.AST] = list(ast.parse(path.read_text(encoding="utf-8")).body)
    while todo:
        node = todo.pop()
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            continue  # runs when called
        if isinstance(node, ast.Call):
            name = getattr(node.func, "id", None) or getattr(node.func, "attr", None)
            if name in POOLS:
                where = path.relative_to(REPO) if path.is_relative_to(REPO) else path.name
                found.append(f"{where}:{node.lineno}")
        todo.extend(ast.iter_child_nodes(node))
    return found


def test_no_pool_is_created_at_import() -> None:
    files = [p for entry in PACKAGES for p in sorted((REPO / entry).rglob("*.py"))]
    assert len(files) > 50
    assert [hit for path in files for hit in _import_time_pools(path)] == []


def test_the_finder_sees_a_module_level_pool(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text(
        "from concurrent import futures\n"
        "POOL = futures.ThreadPoolExecutor(2)\n"
        "def later():\n    return futures.ThreadPoolExecutor(2)\n"
    )
    assert _import_time_pools(sample) == ["sample.py:2"]


class CountingPool(ThreadPoolExecutor):
    def __init__(self) -> None:
        super().__init__(max_workers=2, thread_name_prefix="test-io")
        self.submitted = 0

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Any:
        self.submitted += 1
        return super().submit(fn, *args, **kwargs)


def test_the_dispatcher_runs_on_the_pool_it_is_given() -> None:
    store, fleet, clock = InMemoryJobStore(), FakeFleet([("gpu-a1", "zone-a")]), FixedClock()
    with CountingPool() as pool:
        dispatcher = Dispatcher(store, fleet, clock, make_settings(), io=pool)
        (job,) = make_jobs(store, clock, 1)
        assert dispatcher.dispatch(job).started
        assert pool.submitted >= 1


def test_the_api_hands_its_pool_to_dispatch_and_submit() -> None:
    with CountingPool() as pool:
        deps = build_api_deps(
            make_settings(),
            store=InMemoryJobStore(),
            blobs=InMemoryBlobStore(),
            signer=FakeSigner(),
            publisher=InMemoryPublisher(),
            fleet=FakeFleet([]),
            clock=FixedClock(),
            catalogue=Catalogue.load_default,
            io=pool,
        )
        assert deps.dispatcher.io is pool
        assert deps.submit_deps().io is pool
