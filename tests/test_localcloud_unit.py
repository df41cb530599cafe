"""Local cloud pieces that need no running services."""

from __future__ import annotations

import json
import subprocess
import sys

from localcloud import _procs
from localcloud.cloud import LocalCloud, defined_targets, read_env_file
from localcloud.config import LocalCloudConfig
from localcloud.eventarc import to_cloudevent


def test_cloudevent_has_the_cloud_storage_shape() -> None:
    data = json.dumps(
        {
            "name": "jobs/j/done.json",
            "bucket": "sig",
            "generation": 17,
            "size": 5,
            "metageneration": 1,
            "contentType": "application/json",
        }
    ).encode()
    attributes = {
        "bucketId": "sig",
        "objectId": "jobs/j/done.json",
        "eventType": "OBJECT_FINALIZE",
        "eventTime": "2026-11-28T12:00:00Z",
    }
    headers, body = to_cloudevent(data, attributes, "123")
    assert headers == {
        "ce-specversion": "1.0",
        "ce-id": "123",
        "ce-source": "//storage.googleapis.com/projects/_/buckets/sig",
        "ce-type": "google.cloud.storage.object.v1.finalized",
        "ce-subject": "objects/jobs/j/done.json",
        "ce-time": "2026-11-28T12:00:00Z",
        "Content-Type": "application/json",
    }
    event = json.loads(body)
    assert (event["generation"], event["size"], event["metageneration"]) == ("17", "5", "1")


def test_env_file_round_trips(tmp_path) -> None:
    cloud = LocalCloud(LocalCloudConfig.ephemeral(tmp_path))
    cloud.env = {"A": "plain", "B": "with space and 'quote'", "C": ""}
    cloud.write_env_file()
    assert read_env_file(tmp_path / "env") == cloud.env
    shell = subprocess.run(
        ["bash", "-c", f'. {tmp_path / "env"} && printf %s "$B"'],
        capture_output=True,
        text=True,
        check=True,
    )
    assert shell.stdout == "with space and 'quote'"


def test_defined_targets_reads_main_without_importing(tmp_path) -> None:
    main = tmp_path / "main.py"
    main.write_text("import not_installed_anywhere\n\ndef api(r):\n    pass\n\nreaper = api\n")
    assert defined_targets(main) == ["api", "reaper"]
    assert defined_targets(tmp_path / "absent.py") == []


def test_stop_services_ends_the_whole_tree(tmp_path) -> None:
    # The child starts a grandchild in its own session, as the Compute stand-in's guests do.
    script = (
        "import subprocess, sys, time\n"
        "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'],"
        " start_new_session=True)\n"
        "print(p.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    service = _procs.spawn("tree", [sys.executable, "-c", script], {}, tmp_path)
    find = _procs.log_line(service, "")
    _procs.wait_until(lambda: bool((find() or "").strip()), service, 20, "the grandchild pid")
    grandchild = int((find() or "").split()[0])
    assert _procs._pid_alive(grandchild)
    assert _procs.stop_services(_procs.recorded(tmp_path), grace_s=5) == []
    assert not _procs._pid_alive(service.pid)
    assert not _procs._pid_alive(grandchild)


def test_chaos_attempt_figures_count_each_failed_insert_and_name_the_jobs() -> None:
    from localcloud.scenarios._chaos_checks import attempt_figures
    from localcloud.scenarios._chaos_faults import Injected

    injected = [
        Injected("create_failure", "next inserts", "next 2", hits=2),
        Injected("boot_failure", "next VM to boot"),
        Injected("kill_worker", "job-k", "vm pid 1"),
        Injected("stop_vm", "job-s", "its VM"),  # landed on the VM's next job: job-s unhurt
    ]
    jobs = {
        "job-p": {"attempt": 3, "preemptions": 1, "state": "succeeded"},  # one unexplained
        "job-k": {"attempt": 2, "preemptions": 0, "state": "succeeded"},  # its own fault
        "job-ok": {"attempt": 1, "state": "succeeded"},
        "job-s": {"attempt": 1, "state": "succeeded"},
    }
    figures = attempt_figures(jobs, set(jobs), injected)
    assert figures["unaimed_vm_faults"] == 4  # two inserts, one boot, job-s's unused stop
    assert figures["attempts_beyond_faults"] == 1
    assert figures["attempts_beyond_faults_ids"] == ["job-p"]
    assert figures["jobs_preempted"] == 1 and figures["preemptions_survived"] == 1
