"""What a first `terraform apply` in an empty project needs: APIs, name lengths, ordering,
service agents, least-privilege builds, an example that applies before any image exists."""

from __future__ import annotations

import re

from tests.deploy import hcl

# Google Cloud's limits (project ids 6-30 characters; bucket names at most 63).
PROJECT_ID_MAX = 30
BUCKET_NAME_MAX = 63
EXAMPLE = hcl.TERRAFORM / "examples" / "minimal"


def _name_prefix_max() -> int:
    condition = hcl.variables()["name_prefix"]["validation"][0]["condition"]
    match = re.search(r"\^\[a-z\]\[a-z0-9-\]\{1,(\d+)\}\[a-z0-9\]\$", condition)
    assert match, condition
    return int(match.group(1)) + 2


def _depends_on(body: dict) -> set[str]:
    return {d.strip("${}") for d in body.get("depends_on", [])}


def test_every_bucket_name_fits_with_the_longest_project_id_and_prefix():
    longest = PROJECT_ID_MAX + 1 + _name_prefix_max()
    assert hcl.locals_()["bucket_prefix"] == "${var.project_id}-${var.name_prefix}"
    buckets = hcl.resources("google_storage_bucket")
    assert {"jobs", "outputs", "signals", "models", "function_source"} <= set(buckets)
    for name, body in buckets.items():
        suffix = body["name"].removeprefix("${local.bucket_prefix}")
        assert suffix != body["name"], f"{name} is not named from bucket_prefix"
        assert longest + len(suffix) <= BUCKET_NAME_MAX, f"{name}: {body['name']} can exceed 63"


def test_the_apis_the_deployment_and_its_image_build_use_are_enabled():
    apis = set(hcl.locals_()["required_apis"])
    # IAP: Packer's SSH tunnel to the build VM and allow_iap_ssh.
    assert {"iap.googleapis.com", "iam.googleapis.com", "artifactregistry.googleapis.com"} <= apis


def test_the_custom_role_waits_for_the_iam_api():
    role = hcl.resources("google_project_iam_custom_role")["dispatcher"]
    assert "google_project_service.required" in _depends_on(role)


def test_functions_build_after_their_grants_have_propagated():
    wait = hcl.resources("time_sleep")["iam_propagation"]
    seconds = int(wait["create_duration"].rstrip("s"))
    assert seconds >= 60  # the provider's own custom-build-SA example waits 60 s
    waited_for = _depends_on(wait)
    assert {
        "google_artifact_registry_repository_iam_member.functions_builder",
        "google_project_iam_member.functions_builder_sources",
        "google_storage_bucket_iam_member.grant",
        "google_project_iam_member.log_writer",
        "google_project_iam_member.gcs_agent_publisher",
        "google_project_iam_member.eventarc_agent",
    } <= waited_for
    for name, function in hcl.resources("google_cloudfunctions2_function").items():
        assert "time_sleep.iam_propagation" in _depends_on(function), name


def _project_roles_of(account: str) -> dict[str, str]:
    """Project-level grants to one of the module's service accounts: resource name -> role."""
    found = {}
    for name, body in hcl.resources("google_project_iam_member").items():
        direct = body["member"] == f'${{google_service_account.sa["{account}"].member}}'
        looped = body["member"] == "${google_service_account.sa[each.key].member}" and (
            f'"{account}"' in str(body.get("for_each", ""))
        )
        if direct or looped:
            found[name] = body["role"]
    return found


def test_the_functions_build_account_has_no_project_wide_builder_role():
    roles = _project_roles_of("build")
    # Logs writer, and the objectAdmin whose condition admits gcf-v2-sources-* only.
    assert roles == {
        "log_writer": "roles/logging.logWriter",
        "functions_builder_sources": "roles/storage.objectAdmin",
    }
    sources = hcl.resources("google_project_iam_member")["functions_builder_sources"]
    assert "gcf-v2-sources-" in sources["condition"][0]["expression"]
    repo = hcl.resources("google_artifact_registry_repository")["functions"]
    assert repo["repository_id"] == "${var.name_prefix}-functions"
    grant = hcl.resources("google_artifact_registry_repository_iam_member")["functions_builder"]
    assert grant["role"] == "roles/artifactregistry.writer"
    assert grant["repository"] == "${google_artifact_registry_repository.functions.name}"
    assert grant["member"] == '${google_service_account.sa["build"].member}'
    for name, function in hcl.resources("google_cloudfunctions2_function").items():
        build = function["build_config"][0]
        assert build["docker_repository"] == "${google_artifact_registry_repository.functions.id}"
        assert build["service_account"] == '${google_service_account.sa["build"].id}', name


def test_service_agents_exist_before_anything_is_granted_to_them():
    identities = hcl.resources("google_project_service_identity")["agent"]
    assert identities["provider"].strip("${}") == "google-beta"
    assert set(
        identities["for_each"]
        .removeprefix("${toset(")
        .removesuffix(")}")
        .replace('"', "")
        .strip("[]")
        .replace(" ", "")
        .split(",")
    ) == {
        "eventarc.googleapis.com",
        "pubsub.googleapis.com",
    }
    assert "google_project_service.required" in _depends_on(identities)
    pubsub_agent = hcl.locals_()["pubsub_agent"]
    assert (
        pubsub_agent == '${google_project_service_identity.agent["pubsub.googleapis.com"].member}'
    )
    eventarc = hcl.resources("google_project_iam_member")["eventarc_agent"]
    assert eventarc["role"] == "roles/eventarc.serviceAgent"
    assert "eventarc.googleapis.com" in eventarc["member"]


def test_the_image_builder_writes_the_catalogue_prefix_only():
    grant = hcl.resources("google_storage_bucket_iam_member")["imager_catalogue"]
    assert grant["role"] == "roles/storage.objectAdmin"
    expression = grant["condition"][0]["expression"]
    prefix = "projects/_/buckets/${google_storage_bucket.jobs.name}/objects/catalogue/"
    assert expression.replace("\\", "") == f'resource.name.startsWith("{prefix}")'
    # No bucket-level listing for the imager anywhere (a conditional grant cannot give one).
    for name, body in hcl.resources("google_storage_bucket_iam_member").items():
        if name != "imager_catalogue":
            assert "imager" not in str(body), name


def test_the_example_applies_before_any_image_and_exposes_iap_ssh():
    module = hcl.load(EXAMPLE / "main.tf")["module"][0]["comfyburst"]
    assert "gpu_vm_count" not in module
    assert module["allow_iap_ssh"] == "${var.allow_iap_ssh}"
    example_vars = hcl.variables(EXAMPLE)
    # Off: SSH to the pool is for debugging; the image build's VM has its own IAP rule.
    assert example_vars["allow_iap_ssh"]["default"] is False
    assert "gpu_vm_count" not in example_vars
    tfvars = (EXAMPLE / "terraform.tfvars.example").read_text(encoding="utf-8")
    assert "allow_iap_ssh" in tfvars and "gpu_vm_count" not in tfvars
    providers = {next(iter(p)) for p in hcl.load(EXAMPLE / "main.tf")["provider"]}
    assert {"google", "google-beta"} <= providers


def test_archive_supports_the_glob_excludes_used():
    data = hcl.resources("data.archive_file")["functions"]
    assert any("*" in e for e in data["excludes"])
    pin = hcl.load(hcl.TERRAFORM / "versions.tf")["terraform"][0]["required_providers"][0]
    version = tuple(int(p) for p in pin["archive"]["version"].split("."))
    assert version >= (2, 5, 0)


# Names that are not ours to prefix: Firestore's one (default) database, an object in our bucket.
UNPREFIXED = {
    ("google_firestore_database", "default"),
    ("google_storage_bucket_object", "functions_source"),
}
NAME_KEYS = {"name", "account_id", "secret_id", "role_id", "repository_id"}


def test_name_prefix_reaches_every_resource_name():
    # Two deployments with different name_prefix values share a project without a clash.
    checked = 0
    for block in hcl.blocks("resource"):
        for rtype, named in block.items():
            for rname, body in named.items():
                for key in sorted(NAME_KEYS & set(body)):
                    value = body[key]
                    derived = any(
                        part in value for part in ("var.name_prefix", "local.bucket_prefix")
                    ) or value.startswith(("${google_", "${each.value"))
                    if (rtype, rname) in UNPREFIXED:
                        continue
                    checked += 1
                    assert derived, f"{rtype}.{rname}.{key} = {value!r} ignores name_prefix"
    assert checked > 20
