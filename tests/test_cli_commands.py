"""The `comfyburst` command as a user runs it: help texts, bad input, the API's refusals and the
results stream on the local cloud; every error is one message and exit status 2."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from comfyburst.schema import JobState, ResultMessage
from comfyburst_cli._errors import CliError
from comfyburst_cli.main import app
from comfyburst_cli.watch import subscription_path
from tests._e2e_support import INVERT

WORKFLOW = {"1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8}}}


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def workflow_file(tmp_path: Path) -> Path:
    path = tmp_path / "wf.json"
    path.write_text(json.dumps(WORKFLOW))
    return path


@pytest.fixture
def no_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A folder without .localcloud/env and an environment without ComfyBurst settings."""
    import os

    for name in list(os.environ):
        if name.startswith("COMFYBURST_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_submit_help_shows_the_model_syntax(runner: CliRunner) -> None:
    result = runner.invoke(app, ["submit", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "KIND[/FILENAME]=URL[#sha256=HEX]" in result.output


@pytest.mark.parametrize(
    ("model", "message"),
    [
        ("x", "expected KIND[/FILENAME]=URL"),
        ("nope[/b]=https://huggingface.co/a.ckpt", "unknown kind"),
        ("vae=https://huggingface.co/a.pt#md5=1", "#sha256=HEX"),
    ],
)
def test_bad_model_is_a_message_and_exit_2(
    runner: CliRunner, workflow_file: Path, no_settings: Path, model: str, message: str
) -> None:
    result = runner.invoke(app, ["submit", str(workflow_file), "--model", model])
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert message in result.output


def test_missing_workflow_file_is_exit_2(runner: CliRunner, no_settings: Path) -> None:
    result = runner.invoke(app, ["submit", str(no_settings / "absent.json")])
    assert result.exit_code == 2
    assert "no such file" in result.output


def test_no_api_configured_is_exit_2(
    runner: CliRunner, workflow_file: Path, no_settings: Path
) -> None:
    result = runner.invoke(app, ["status", "job-1"])
    assert result.exit_code == 2
    assert "COMFYBURST_API_URL" in result.output


def test_unreachable_api_is_exit_2(
    runner: CliRunner, no_settings: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COMFYBURST_API_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("COMFYBURST_AUTH", "none")
    result = runner.invoke(app, ["status", "job-1"])
    assert result.exit_code == 2
    assert "cannot reach http://127.0.0.1:9/jobs/job-1" in result.output


@pytest.mark.parametrize(
    ("name", "project", "expected"),
    [
        ("projects/p/subscriptions/s", None, "projects/p/subscriptions/s"),
        ("s", "p", "projects/p/subscriptions/s"),
        (" s ", "p", "projects/p/subscriptions/s"),
    ],
)
def test_subscription_path(name: str, project: str | None, expected: str) -> None:
    assert subscription_path(name, project) == expected


@pytest.mark.parametrize(
    ("name", "project", "message"),
    [
        ("s", None, "has no project"),
        ("projects/p/topics/t", "p", "expected projects/P/subscriptions/S"),
        ("a/b", "p", "expected projects/P/subscriptions/S or S"),
    ],
)
def test_subscription_path_errors(name: str, project: str | None, message: str) -> None:
    with pytest.raises(CliError, match=message):
        subscription_path(name, project)


def _write_local_env(folder: Path, env: dict[str, str]) -> None:
    """`.localcloud/env` as `make up` writes it (export K=V lines)."""
    (folder / ".localcloud").mkdir()
    lines = [f"export {key}={value}" for key, value in env.items()]
    (folder / ".localcloud" / "env").write_text("\n".join(lines) + "\n")


def _drain(env: dict[str, str]) -> None:
    from google.api_core.exceptions import DeadlineExceeded
    from google.cloud import pubsub_v1

    subscriber = pubsub_v1.SubscriberClient()
    path = subscriber.subscription_path(
        env["COMFYBURST_PROJECT_ID"], env["COMFYBURST_RESULTS_SUBSCRIPTION"]
    )
    try:
        for _ in range(50):
            try:
                answer = subscriber.pull(subscription=path, max_messages=1000, timeout=5)
            except DeadlineExceeded:
                return
            if not answer.received_messages:
                return
            ack_ids = [m.ack_id for m in answer.received_messages]
            subscriber.acknowledge(subscription=path, ack_ids=ack_ids)
    finally:
        subscriber.close()


@pytest.mark.emulator
def test_watch_on_the_local_cloud_prints_a_result_from_the_env_file(
    runner: CliRunner, localcloud_env: dict[str, str], no_settings: Path
) -> None:
    from google.cloud import pubsub_v1

    # The env file names the subscription bare, as the local cloud writes it.
    assert "/" not in localcloud_env["COMFYBURST_RESULTS_SUBSCRIPTION"]
    _write_local_env(no_settings, localcloud_env)
    message = ResultMessage(job_id="job-watch-1", status=JobState.SUCCEEDED, attempt=1)
    topic = f"projects/{localcloud_env['COMFYBURST_PROJECT_ID']}/topics/"
    topic += localcloud_env["COMFYBURST_RESULTS_TOPIC"]
    publisher = pubsub_v1.PublisherClient()
    # Earlier tests' results wait on the same subscription (wipes reset Firestore and buckets,
    # not Pub/Sub): ack them first, so the one message watch prints is this test's.
    _drain(localcloud_env)
    # Published before watch opens its stream: the pull subscription keeps it until pulled.
    publisher.publish(topic, message.model_dump_json().encode(), **message.attributes()).result(
        timeout=30
    )
    result = runner.invoke(app, ["watch", "--max-messages", "1", "--timeout-s", "60"])
    assert result.exit_code == 0, result.output
    assert "job-watch-1  succeeded  attempt 1" in result.output


@pytest.mark.emulator
def test_watch_on_a_missing_subscription_says_so_and_exits_2(
    runner: CliRunner, localcloud_env: dict[str, str], no_settings: Path
) -> None:
    project = localcloud_env["COMFYBURST_PROJECT_ID"]
    began = time.monotonic()
    result = runner.invoke(
        app, ["watch", f"projects/{project}/subscriptions/absent", "--timeout-s", "60"]
    )
    assert result.exit_code == 2, result.output
    assert "ended" in result.output and "absent" in result.output
    assert time.monotonic() - began < 55  # the failed stream ended the wait, not the timeout


@pytest.mark.emulator
def test_api_refusal_is_the_apis_message_and_exit_2(
    runner: CliRunner, localcloud_env: dict[str, str], no_settings: Path, tmp_path: Path
) -> None:
    _write_local_env(no_settings, localcloud_env)
    workflow = tmp_path / "bad.json"
    workflow.write_text(json.dumps({"1": {"class_type": "NoSuchNodeType", "inputs": {}}}))
    result = runner.invoke(app, ["submit", str(workflow)], env={"COLUMNS": "200"})
    assert result.exit_code == 2, result.output
    assert "the API answered 4" in result.output
    assert "NoSuchNodeType" in result.output


def test_the_cli_imports_neither_the_worker_nor_the_dev_tools() -> None:
    import subprocess
    import sys

    code = (
        "import sys, comfyburst_cli.main, comfyburst_cli.watch; "
        "print(sorted({m.split('.')[0] for m in sys.modules}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    loaded = set(json.loads(out.replace("'", '"')))
    assert not loaded & {"comfyburst_worker", "tools", "localcloud"}, loaded


@pytest.mark.emulator
def test_jobs_lists_the_callers_jobs_newest_first(
    runner: CliRunner, localcloud_env: dict[str, str], no_settings: Path
) -> None:
    _write_local_env(no_settings, localcloud_env)
    submitted = []
    for _ in range(3):
        result = runner.invoke(app, ["submit", str(INVERT)], env={"COLUMNS": "200"})
        assert result.exit_code == 0, result.output
        submitted.append(result.output.split("job_id", 1)[1].split()[0])
    listed = runner.invoke(app, ["jobs", "--json", "--limit", "2"])
    assert listed.exit_code == 0, listed.output
    jobs = [json.loads(line) for line in listed.output.splitlines()]
    assert [job["job_id"] for job in jobs] == submitted[::-1][:2]
    table = runner.invoke(app, ["jobs"], env={"COLUMNS": "200"})
    assert table.exit_code == 0, table.output
    assert all(job_id in table.output for job_id in submitted), table.output
    none = runner.invoke(app, ["jobs", "--json", "--state", "succeeded"])
    assert none.exit_code == 0 and none.output == ""
    bad = runner.invoke(app, ["jobs", "--state", "nope"])
    assert bad.exit_code == 2 and "state must be one of" in bad.output
