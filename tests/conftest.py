"""Shared fixtures. The local cloud starts lazily: only a test that asks for it (or is marked
`emulator`/`e2e`) starts it, once per session, on ephemeral ports. With
COMFYBURST_LOCALCLOUD_ENV=.localcloud/env a running `make up` cloud is reused instead."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent

if os.environ.get("PYTEST_XDIST_WORKER"):
    # pytest-xdist's workers start with COLUMNS=80 and LINES=24, which a rich Console made at
    # import (the CLI's) keeps as its width: the CLI tests' own COLUMNS would be ignored.
    for _name in ("COLUMNS", "LINES"):
        os.environ.pop(_name, None)


def refuse_localcloud() -> None:
    """`make check` runs only tests that need no local cloud: one that starts it is mis-marked."""
    if os.environ.get("COMFYBURST_TESTS_NO_LOCALCLOUD") == "1":
        pytest.fail(
            "this test starts the local cloud but is not marked emulator/e2e/slow/real_comfyui "
            "(COMFYBURST_TESTS_NO_LOCALCLOUD=1, as in `make check`)"
        )


@pytest.fixture(scope="session")
def localcloud_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """The local cloud's env (emulator hosts, COMFYBURST_* settings, URLs), set in os.environ."""
    from localcloud.cloud import EmulatorsMissing, LocalCloud, read_env_file
    from localcloud.config import LocalCloudConfig

    refuse_localcloud()
    cloud: LocalCloud | None = None
    reuse = os.environ.get("COMFYBURST_LOCALCLOUD_ENV")
    if reuse:
        if os.environ.get("PYTEST_XDIST_WORKER"):
            pytest.fail("COMFYBURST_LOCALCLOUD_ENV with -n: the workers would wipe one cloud")
        env = read_env_file(REPO_ROOT / reuse)
    else:
        state_dir = tmp_path_factory.mktemp("localcloud")
        # No scheduler: this cloud's tests drive each step (a reaper pass too) themselves; a
        # background pass would act on their half-made state (a lease whose job is absent is
        # released) between a test's read and its conditional write.
        cloud = LocalCloud(LocalCloudConfig.ephemeral(state_dir, reaper_period_s=None))
        try:
            cloud.start()
        except EmulatorsMissing as exc:
            pytest.fail(str(exc))
        env = dict(cloud.env)
    patch = pytest.MonkeyPatch()
    for name, value in env.items():
        patch.setenv(name, value)
    try:
        yield env
    finally:
        patch.undo()
        if cloud is not None:
            cloud.stop()


@pytest.fixture(autouse=True)
def _wipe_localcloud(request: pytest.FixtureRequest) -> None:
    """Before each emulator/e2e test: empty Firestore and the buckets, reset the VMs."""
    marked = request.node.get_closest_marker("emulator") or request.node.get_closest_marker("e2e")
    if marked is None:
        return
    from localcloud.wipe import wipe_all

    wipe_all(request.getfixturevalue("localcloud_env"))


@pytest.fixture(scope="session")
def function_settings(localcloud_env: dict[str, str]) -> Any:
    """FunctionSettings read from the local cloud's env."""
    from comfyburst.settings import FunctionSettings

    return FunctionSettings()


@pytest.fixture(scope="session")
def job_store(function_settings: Any) -> Any:
    """FirestoreJobStore on the Firestore emulator."""
    from comfyburst import wiring

    return wiring.job_store(function_settings)


@pytest.fixture(scope="session")
def storage_client(function_settings: Any) -> Any:
    """google-cloud-storage client on fake-gcs-server."""
    from comfyburst import wiring

    return wiring.storage_client(function_settings)


@pytest.fixture(scope="session")
def blob_store(storage_client: Any) -> Any:
    """GcsBlobStore on fake-gcs-server."""
    from comfyburst.adapters.gcs import GcsBlobStore

    return GcsBlobStore(storage_client)


@pytest.fixture(scope="session")
def signer(function_settings: Any, storage_client: Any) -> Any:
    """KeyFileUrlSigner with the local cloud's throwaway key."""
    from comfyburst import wiring

    return wiring.url_signer(function_settings, storage_client)


@pytest.fixture(scope="session")
def publisher(function_settings: Any) -> Any:
    """PubSubPublisher on the results topic of the Pub/Sub emulator."""
    from comfyburst import wiring

    return wiring.publisher(function_settings)


@pytest.fixture(scope="session")
def fleet(function_settings: Any) -> Any:
    """ComputeFleet on the Compute stand-in's pool."""
    from comfyburst import wiring

    return wiring.fleet(function_settings)


@pytest.fixture(scope="session")
def subscriber(localcloud_env: dict[str, str]) -> Iterator[Any]:
    """A Pub/Sub SubscriberClient on the emulator."""
    from google.cloud import pubsub_v1

    with pubsub_v1.SubscriberClient() as client:
        yield client


@pytest.fixture
def standin(tmp_path: Path) -> Iterator[str]:
    """A ComfyUI stand-in whose input, output and temp folders are `tmp_path`'s `in`, `out` and
    `tmp` (where tests/_worker_support.local_settings points the agent); its URL."""
    from localcloud.comfyui_standin import StandinServer

    server = StandinServer(tmp_path / "in", tmp_path / "out", tmp_path / "tmp")
    yield server.start()
    server.stop()


# --- The small chaos run beside the suite (tests/test_chaos.py, tests/_chaos_background.py) ---

CHAOS_MODULE = "tests/test_chaos.py"


def pytest_collection_finish(session: pytest.Session) -> None:
    """Start the chaos run once the session is known to include its test (after deselection)."""
    config = session.config
    if config.option.collectonly or os.environ.get("PYTEST_XDIST_WORKER"):
        return
    if not any(item.nodeid.startswith(CHAOS_MODULE) for item in session.items):
        return
    from tests._chaos_background import CHAOS_KEY, Background

    refuse_localcloud()
    out_dir = config._tmp_path_factory.mktemp("chaos")  # type: ignore[attr-defined]
    config.stash[CHAOS_KEY] = Background.start(out_dir)


def pytest_sessionfinish(session: pytest.Session) -> None:
    """A run the session no longer waits for (-x, an interrupt) stops with its cloud."""
    from tests._chaos_background import CHAOS_KEY

    run = session.config.stash.get(CHAOS_KEY, None)
    if run is not None:
        run.stop()


# --- Parallel runs (`pytest -n 2 --dist loadgroup`, as `make test` does) -----------------------


def _uses_session_cloud(item: pytest.Item) -> bool:
    """The test needs conftest's session cloud (directly, or through the autouse wipe)."""
    marked = item.get_closest_marker("emulator") or item.get_closest_marker("e2e")
    return bool(marked) or "localcloud_env" in getattr(item, "fixturenames", ())


def cloud_groups(items: list[pytest.Item]) -> dict[str, str]:
    """Each test module's xdist group, so the tests of one local cloud stay on one worker and
    no cloud starts twice: the shared e2e cloud (modules using tests/_e2e_support.e2e_env),
    a module's own cloud (it defines `localcloud_env`), conftest's session cloud (any other
    module with a test that needs it), else the module alone (no cloud)."""
    groups: dict[str, str] = {}
    for item in items:
        path = item.nodeid.split("::")[0]
        module = vars(getattr(item, "module", None) or object)
        if "e2e_env" in module:
            groups[path] = "cloud-e2e"
        elif "localcloud_env" in module:
            groups[path] = f"own-{path}"
        elif _uses_session_cloud(item):
            groups[path] = "cloud-session"
        else:
            groups.setdefault(path, f"own-{path}")
    return groups


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The chaos test waits for its background run, so it goes last; under xdist (where it runs
    in its worker, not beside the session) it goes first, so its worker is the one that waits
    while the other takes the rest. Under xdist every test gets its module's cloud group
    (before xdist reads the groups)."""
    chaos = [item for item in items if item.nodeid.startswith(CHAOS_MODULE)]
    rest = [item for item in items if not item.nodeid.startswith(CHAOS_MODULE)]
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        items[:] = rest + chaos
        return
    groups = cloud_groups(items)
    items[:] = chaos + heaviest_first(rest, groups)
    for item in items:
        item.add_marker(pytest.mark.xdist_group(groups[item.nodeid.split("::")[0]]))


# Rough seconds a test costs, by marker (from `make test --durations`), and a cloud's start: only
# to hand the heaviest groups out first, so no worker is left with one long group at the end.
_COST_S = {"e2e": 8.0, "slow": 8.0, "browser": 5.0, "emulator": 1.0}
_CLOUD_START_S = 15.0


def heaviest_first(items: list[pytest.Item], groups: dict[str, str]) -> list[pytest.Item]:
    """The items regrouped, the groups in order of their estimated cost (largest first); each
    group's own items keep their order."""
    by_group: dict[str, list[pytest.Item]] = {}
    cost: dict[str, float] = {}
    for item in items:
        group = groups[item.nodeid.split("::")[0]]
        by_group.setdefault(group, []).append(item)
        marks = [_COST_S[m.name] for m in item.iter_markers() if m.name in _COST_S]
        cost[group] = cost.get(group, 0.0) + (max(marks) if marks else 0.05)
    for group, members in by_group.items():
        # A shared cloud, or a module of e2e tests (which start their own), pays for a start.
        if group.startswith("cloud-") or members[0].get_closest_marker("e2e"):
            cost[group] += _CLOUD_START_S
    order = sorted(by_group, key=lambda g: -cost[g])
    return [item for group in order for item in by_group[group]]
