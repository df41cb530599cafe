"""Offline checks of terraform's IAM: least-privilege dispatch roles conditioned on the pool's VM
names, service-account ids within the IAM API's limits, service agents with their roles."""

from __future__ import annotations

import importlib
import re
from typing import Any

from comfyburst.domain.scheduling import vm_name
from tests.deploy import hcl

# The IAM API's CreateServiceAccountRequest: accountId is 6-30 characters, RFC 1035.
ACCOUNT_ID = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])$")
ACCOUNT_ID_LENGTHS = range(6, 31)
PREFIX_RULE = re.compile(r"\^\[a-z\]\[a-z0-9-\]\{(\d+),(\d+)\}\[a-z0-9\]\$")
POOL_CONDITION = (
    'resource.type != "compute.googleapis.com/Instance" || '
    'resource.name.extract("/instances/{name}").startsWith("${local.pool_vm_name_prefix}-")'
)


def _code_permissions() -> set[str]:
    return set(importlib.import_module("comfyburst.permissions").COMPUTE_PERMISSIONS)


def _prefix_lengths() -> tuple[int, int]:
    """Shortest and longest name_prefix variables.tf's validation allows."""
    condition = hcl.variables()["name_prefix"]["validation"][0]["condition"]
    low, high = PREFIX_RULE.search(condition).groups()
    return int(low) + 2, int(high) + 2


def _for_each(body: dict[str, Any]) -> dict[str, Any]:
    value = body["for_each"]
    if isinstance(value, dict):
        return value
    match = re.fullmatch(r"\$\{local\.(\w+)\}", value)
    assert match, f"unsupported for_each {value!r}"
    return hcl.locals_()[match.group(1)]


def _account_ids(prefix: str) -> dict[str, str]:
    """Every google_service_account id of the module for one name_prefix, by resource.key."""
    ids = {}
    for rname, body in hcl.resources("google_service_account").items():
        for key, value in _for_each(body).items():
            text = body["account_id"].replace("${var.name_prefix}", prefix)
            text = text.replace("${each.key}", key)
            if isinstance(value, dict):
                for field, item in value.items():
                    text = text.replace(f"${{each.value.{field}}}", str(item))
            assert "${" not in text, f"cannot evaluate {rname}.account_id: {text!r}"
            ids[f"{rname}.{key}"] = text
    return ids


def test_every_service_account_id_fits_the_iam_limits_for_any_allowed_prefix():
    shortest, longest = _prefix_lengths()
    assert longest == 20
    for length in (shortest, longest):
        ids = _account_ids("a" * length)
        assert {"webhooks.on_result", "webhooks.push", "sa.scheduler"} <= set(ids)
        for name, account_id in ids.items():
            assert len(account_id) in ACCOUNT_ID_LENGTHS, (name, account_id, len(account_id))
            assert ACCOUNT_ID.fullmatch(account_id), (name, account_id)
        assert len(set(ids.values())) == len(ids), "two accounts share an id"


def test_every_service_account_waits_for_the_iam_api():
    # They exist with webhooks off too, so a new project's first apply creates them all.
    for name, body in hcl.resources("google_service_account").items():
        assert "google_project_service.required" in str(body.get("depends_on", "")), name


def test_the_api_dispatch_role_never_stops_or_deletes_a_vm():
    roles = hcl.resources("google_project_iam_custom_role")
    assert roles["api_dispatcher"]["permissions"] == "${local.api_compute_permissions}"
    assert roles["dispatcher"]["permissions"] == "${local.dispatcher_compute_permissions}"
    assert roles["api_dispatcher"]["role_id"] != roles["dispatcher"]["role_id"]
    everything = set(hcl.locals_()["dispatcher_compute_permissions"])
    reaper_only = set(hcl.locals_()["reaper_only_compute_permissions"])
    assert reaper_only == {"compute.instances.delete", "compute.instances.stop"}
    # What api_compute_permissions evaluates to: the code's list without the reaper's two.
    assert everything == _code_permissions()
    api = everything - reaper_only
    assert "compute.instances.delete" not in api and "compute.instances.stop" not in api
    assert {"compute.instances.start", "compute.instances.create"} <= api
    expression = hcl.locals_()["api_compute_permissions"]
    assert "local.dispatcher_compute_permissions" in expression
    assert "!contains(local.reaper_only_compute_permissions" in expression


def test_the_api_and_the_reaper_get_their_own_roles_on_pool_vms_only():
    grant = hcl.resources("google_project_iam_member")["dispatcher"]
    assert grant["for_each"] == {
        "api": "${google_project_iam_custom_role.api_dispatcher.id}",
        "reaper": "${google_project_iam_custom_role.dispatcher.id}",
    }
    assert grant["member"] == "${google_service_account.sa[each.key].member}"
    (condition,) = grant["condition"]
    assert condition["expression"].replace('\\"', '"') == POOL_CONDITION
    # No other grant hands either account a compute role.
    for name, body in hcl.resources("google_project_iam_member").items():
        if name != "dispatcher" and "compute" in str(body.get("role", "")):
            assert "api" not in str(body["member"]) and "reaper" not in str(body["member"]), name


def test_the_condition_names_the_vms_the_dispatcher_creates():
    main = hcl.locals_()
    assert main["pool_vm_name_prefix"] == "${var.name_prefix}-gpu"
    functions = (hcl.TERRAFORM / "functions.tf").read_text(encoding="utf-8")
    assert re.search(r"COMFYBURST_POOL_NAME_PREFIX\s*=\s*local\.pool_vm_name_prefix", functions)
    # What the condition admits, for name_prefix "acme": the names vm_name makes, nothing else.
    pool_prefix = "acme-gpu"
    admitted = re.compile(rf"^projects/[^/]+/zones/[^/]+/instances/{re.escape(pool_prefix)}-")
    made = vm_name(pool_prefix, "job-1", 0, "us-central1-a")
    assert admitted.match(f"projects/p/zones/us-central1-a/instances/{made}")
    for other in ("acme-gpux-1", "acme-builder", "comfyburst-gpu-1", "acme-gpu"):
        assert not admitted.match(f"projects/p/zones/us-central1-a/instances/{other}"), other


def test_the_pubsub_agent_holds_its_service_agent_role():
    agents = hcl.resources("google_project_service_identity")["agent"]
    assert "pubsub.googleapis.com" in agents["for_each"]
    grant = hcl.resources("google_project_iam_member")["pubsub_agent"]
    assert grant["role"] == "roles/pubsub.serviceAgent"
    expected = '${google_project_service_identity.agent["pubsub.googleapis.com"].member}'
    assert grant["member"] == expected
    wait = hcl.resources("time_sleep")["iam_propagation"]
    assert "${google_project_iam_member.pubsub_agent}" in wait["depends_on"]


def test_the_build_account_is_object_admin_of_its_source_buckets_only():
    grants = hcl.locals_()["bucket_grants"]
    assert grants["build-source"]["role"] == "roles/storage.objectAdmin"
    assert grants["build-source"]["bucket"] == "${google_storage_bucket.function_source.name}"
    sources = hcl.resources("google_project_iam_member")["functions_builder_sources"]
    assert sources["role"] == "roles/storage.objectAdmin"
    expression = sources["condition"][0]["expression"].replace('\\"', '"')
    assert expression == (
        'resource.name.startsWith("projects/_/buckets/gcf-v2-sources-'
        '${data.google_project.this.number}-${var.region}")'
    )
    build_grants = [g for g in grants.values() if g["sa"] == "build"]
    assert len(build_grants) == 1


def test_the_docs_advise_on_a_deleted_custom_role_as_the_provider_behaves():
    # google_project_iam_custom_role: within 7 days an apply undeletes the role; from day 7 to
    # day 37 its id can be neither created nor changed.
    for path in (hcl.TERRAFORM / "README.md", hcl.REPO / "docs" / "DEPLOY.md"):
        text = " ".join(path.read_text(encoding="utf-8").split())
        assert "undelete" in text and "7 days" in text and "day 37" in text, path
        assert "meanwhile fails" not in text and "is kept 7 days: wait" not in text, path
