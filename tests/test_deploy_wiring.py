"""Wiring between terraform, the image and the code: names one side uses exist on the other."""

from __future__ import annotations

import ast
import importlib
import re
import tomllib

import pytest
from pydantic_core import PydanticUndefined

from comfyburst.schema import DeploymentConfig, ModelKind
from comfyburst.settings import FunctionSettings
from tests.deploy import hcl

FUNCTION_TARGETS = {"api", "on_done_flag", "reaper", "on_result"}
MAIN_PY = hcl.REPO / "functions" / "main.py"
WORKER_PKG = hcl.GPU_IMAGE / "worker" / "comfyburst_worker"
SYSTEMD = hcl.GPU_IMAGE / "systemd"
SCRIPTS = hcl.GPU_IMAGE / "scripts"


def _env_names(prefix: str, text: str) -> set[str]:
    return set(re.findall(rf"\b{prefix}[A-Z0-9_]+\b", text))


def _terraform_text() -> str:
    return "\n".join(p.read_text(encoding="utf-8") for p in hcl.module_files())


def _functions() -> dict[str, dict]:
    return hcl.resources("google_cloudfunctions2_function")


def _required(model) -> set[str]:
    return {n for n, f in model.model_fields.items() if f.is_required()}


def _unit(name: str) -> dict[str, list[str]]:
    """A systemd unit as {key: [values]} (sections merged; keys are unique enough here)."""
    parsed: dict[str, list[str]] = {}
    for line in (SYSTEMD / name).read_text(encoding="utf-8").splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            parsed.setdefault(key.strip(), []).append(value.strip().strip('"'))
    return parsed


# --- Functions -------------------------------------------------------------------------------


def test_terraform_deploys_exactly_the_function_targets():
    targets = {f["build_config"][0]["entry_point"] for f in _functions().values()}
    assert targets == FUNCTION_TARGETS


def test_every_entry_point_exists_in_main_py():
    if not MAIN_PY.exists():
        pytest.skip("functions/main.py is not written yet; the targets are checked once it exists")
    tree = ast.parse(MAIN_PY.read_text(encoding="utf-8"))
    defined = {n.name for n in tree.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)}
    for node in tree.body:
        if isinstance(node, ast.Assign):
            defined |= {t.id for t in node.targets if isinstance(t, ast.Name)}
        elif isinstance(node, ast.ImportFrom):
            defined |= {a.asname or a.name for a in node.names}
    targets = {f["build_config"][0]["entry_point"] for f in _functions().values()}
    missing = targets - defined
    assert not missing, f"terraform names entry points functions/main.py lacks: {missing}"


def test_function_settings_match_terraform():
    fields = set(FunctionSettings.model_fields)
    named = {
        n.removeprefix("COMFYBURST_").lower()
        for n in _env_names("COMFYBURST_", _terraform_text())
        if not n.startswith("COMFYBURST_WORKER_")
    }
    assert not named - fields, f"terraform sets unknown settings: {named - fields}"
    missing = _required(FunctionSettings) - named
    assert not missing, f"required settings terraform does not set: {missing}"


def test_every_function_gets_the_same_settings():
    for name, body in _functions().items():
        env = body["service_config"][0]["environment_variables"]
        assert env == "${local.function_env}", name


def test_function_runtime_is_python312():
    assert hcl.variables()["functions_runtime"]["default"] == "python312"
    for body in _functions().values():
        assert body["build_config"][0]["runtime"] == "${var.functions_runtime}"


def test_trigger_listens_to_the_signals_bucket_with_retries():
    trigger = _functions()["on_done_flag"]["event_trigger"][0]
    assert trigger["event_type"] == "google.cloud.storage.object.v1.finalized"
    assert trigger["retry_policy"] == "RETRY_POLICY_RETRY"
    filters = {f["attribute"]: f["value"] for f in trigger["event_filters"]}
    assert filters == {"bucket": "${google_storage_bucket.signals.name}"}
    env = hcl.locals_()
    assert "google_storage_bucket.signals.name" in _terraform_text()
    assert env  # locals parsed


def test_dispatcher_role_holds_exactly_the_code_permissions():
    compute = importlib.import_module("comfyburst.adapters.compute")
    if hasattr(compute, "COMPUTE_PERMISSIONS"):
        expected = compute.COMPUTE_PERMISSIONS
    else:
        expected = importlib.import_module("comfyburst.permissions").COMPUTE_PERMISSIONS
    granted = hcl.locals_()["dispatcher_compute_permissions"]
    assert len(granted) == len(set(granted))
    assert set(granted) == set(expected)
    role = hcl.resources("google_project_iam_custom_role")["dispatcher"]
    assert role["permissions"] == "${local.dispatcher_compute_permissions}"


def test_the_done_trigger_may_only_read_vms():
    # complete.py reads the VM's lastStartTimestamp for the receipt; nothing more.
    role = hcl.resources("google_project_iam_custom_role")["vm_reader"]
    assert role["permissions"] == ["compute.instances.get"]
    grant = hcl.resources("google_project_iam_member")["done_reads_vms"]
    assert grant["role"] == "${google_project_iam_custom_role.vm_reader.id}"
    assert grant["member"] == '${google_service_account.sa["done"].member}'


def test_dispatchers_may_act_as_the_worker_only():
    grant = hcl.resources("google_service_account_iam_member")["dispatcher_acts_as_worker"]
    assert grant["role"] == "roles/iam.serviceAccountUser"
    assert grant["service_account_id"] == '${google_service_account.sa["worker"].name}'


# --- The VM pool -----------------------------------------------------------------------------


def test_vm_metadata_carries_a_valid_deployment_config():
    config = hcl.locals_()["deployment_config"]
    fields = set(DeploymentConfig.model_fields)
    assert not set(config) - fields, f"unknown DeploymentConfig keys: {set(config) - fields}"
    assert _required(DeploymentConfig) <= set(config)
    metadata = hcl.resources("google_compute_region_instance_template")["gpu"]["metadata"]
    assert metadata["comfyburst-config"] == "${jsonencode(local.deployment_config)}"


def test_an_apply_creates_no_vm_only_the_templates():
    assert hcl.resources("google_compute_instance") == {}
    template = hcl.resources("google_compute_region_instance_template")["gpu"]
    assert template["for_each"] == "${local.gpu_templates}"
    assert template["region"] == "${each.value.region}"
    scheduling = template["scheduling"][0]
    assert scheduling["on_host_maintenance"] == "TERMINATE"
    assert scheduling["automatic_restart"] is False
    assert scheduling["provisioning_model"] == '${each.value.spot ? "SPOT" : "STANDARD"}'
    assert template["lifecycle"][0]["create_before_destroy"] is True
    # Each template in its own region's subnet.
    nic = template["network_interface"][0]
    assert nic["subnetwork"] == "${google_compute_subnetwork.pool[each.value.region].id}"


def test_the_functions_get_every_class_with_its_templates():
    env = hcl.locals_()["function_env"]
    text = _terraform_text()
    assert "COMFYBURST_GPU_CLASSES" in text and "COMFYBURST_DEFAULT_GPU_CLASS" in text
    assert "jsonencode(local.gpu_classes_env)" in env
    assert "COMFYBURST_PREEMPTION_FALLBACK_CLASS = var.preemption_fallback_class" in text
    # Superseded by the classes: never set beside them.
    assert "COMFYBURST_POOL_TEMPLATE" not in text and "COMFYBURST_POOL_MAX_VMS" not in text
    # The provider documents `id` as projects/P/regions/R/instanceTemplates/N, which
    # instances.insert's sourceInstanceTemplate takes (a partial URL).
    assert 'google_compute_region_instance_template.gpu["${spec.name}/${region}"].id' in text


def test_pool_and_class_labels_and_the_class_metadata_match_the_code():
    classes = importlib.import_module("comfyburst.domain.gpu_classes")
    key = hcl.locals_()["pool_label_key"]
    assert key == FunctionSettings.model_fields["pool_label"].default.partition("=")[0]
    assert hcl.locals_()["class_label_key"] == classes.CLASS_LABEL
    vm = hcl.resources("google_compute_region_instance_template")["gpu"]
    assert "(local.pool_label_key) = var.pool_name" in vm["labels"]
    assert "(local.class_label_key) = each.value.class" in vm["labels"]
    # The worker reads its class from metadata (the metadata server serves no labels).
    assert vm["metadata"][classes.CLASS_METADATA_KEY] == "${each.value.class}"
    assert 'COMFYBURST_POOL_LABEL               = "${local.pool_label_key}=${var.pool_name}"' in (
        _terraform_text()
    )


def test_one_subnet_router_and_nat_per_region_of_the_pool():
    for rtype in ("google_compute_subnetwork", "google_compute_router"):
        assert hcl.resources(rtype)["pool"]["for_each"] == "${local.pool_subnet_cidrs}", rtype
    nat = hcl.resources("google_compute_router_nat")["pool"]
    assert nat["for_each"] == "${google_compute_router.pool}"
    assert nat["subnetwork"][0]["name"] == "${google_compute_subnetwork.pool[each.key].id}"


def test_the_dispatchers_may_create_from_templates_in_every_region():
    # A project-level grant of the custom role: every region's templates, subnets and zones.
    grant = hcl.resources("google_project_iam_member")["dispatcher"]
    assert grant["role"] == "${each.value}"
    assert set(grant["for_each"]) == {"api", "reaper"}
    granted = set(hcl.locals_()["dispatcher_compute_permissions"])
    wanted = {
        "compute.instances.create",
        "compute.instanceTemplates.useReadOnly",
        "compute.subnetworks.use",
        "compute.disks.create",
        "compute.images.useReadOnly",
    }
    assert wanted <= granted


def test_image_family_matches():
    packer_vars = hcl.load(hcl.GPU_IMAGE / "variables.pkr.hcl")["variable"]
    packer_family = next(v["image_family"]["default"] for v in packer_vars if "image_family" in v)
    assert hcl.variables()["gpu_image_family"]["default"] == packer_family


# --- The image -------------------------------------------------------------------------------


def test_worker_unit_starts_the_real_entry_point():
    unit = _unit("comfyburst-worker.service")
    (exec_start,) = unit["ExecStart"]
    assert "comfyui.service" in " ".join(unit["After"])
    assert unit["Requires"] == ["comfyui.service"]
    assert unit["Restart"] == ["on-failure"]
    if exec_start.endswith("-m comfyburst_worker"):
        main = WORKER_PKG / "__main__.py"
        assert main.is_file(), "the unit runs `python -m comfyburst_worker`: __main__.py is missing"
    else:
        script = exec_start.split()[0].rsplit("/", 1)[-1]
        pyproject = tomllib.loads((hcl.GPU_IMAGE / "worker" / "pyproject.toml").read_text())
        assert script in pyproject["project"]["scripts"], f"no console script {script}"


def test_console_script_points_at_a_real_function():
    pyproject = tomllib.loads((hcl.GPU_IMAGE / "worker" / "pyproject.toml").read_text())
    target = pyproject["project"]["scripts"]["comfyburst-worker"]
    module, _, func = target.partition(":")
    path = hcl.GPU_IMAGE / "worker" / (module.replace(".", "/") + ".py")
    assert path.is_file(), f"console script target {module} is missing"
    tree = ast.parse(path.read_text(encoding="utf-8"))
    assert func in {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}


def test_worker_settings_set_by_the_image_exist():
    settings = importlib.import_module("comfyburst_worker.settings").WorkerSettings
    fields = set(settings.model_fields)
    text = "\n".join(p.read_text(encoding="utf-8") for p in SYSTEMD.iterdir()) + _terraform_text()
    prefix = "COMFYBURST_WORKER_"
    named = {n.removeprefix(prefix).lower() for n in _env_names(prefix, text)}
    assert named, "the worker unit should point the agent at ComfyUI and the model cache"
    assert not named - fields, f"unknown worker settings: {named - fields}"
    assert not _required(settings) - named, "worker settings without default are not set"


def test_comfyui_listens_on_loopback_where_the_worker_looks():
    (exec_start,) = _unit("comfyui.service")["ExecStart"]
    assert "--listen 127.0.0.1" in exec_start and "--port 8188" in exec_start
    env = dict(v.split("=", 1) for v in _unit("comfyburst-worker.service")["Environment"])
    assert env["COMFYBURST_WORKER_COMFYUI_URL"] == "http://127.0.0.1:8188"


def test_model_cache_has_a_folder_per_model_kind():
    text = (SCRIPTS / "06-model-cache.sh").read_text(encoding="utf-8")
    block = re.search(r"MODEL_KINDS=\(([^)]*)\)", text)
    assert block is not None
    assert set(block.group(1).split()) == {k.value for k in ModelKind}
    env = dict(
        v.strip('"').split("=", 1) for v in _unit("comfyburst-worker.service")["Environment"]
    )
    common = (SCRIPTS / "common.sh").read_text(encoding="utf-8")
    root = re.search(r"^readonly MODELS_ROOT=(\S+)$", common, re.M)
    assert root is not None
    # The folders 06-model-cache.sh makes are the ones the worker unit points the agent at.
    assert env["COMFYBURST_WORKER_MODEL_CACHE_DIR"] == f"{root.group(1)}/store"
    assert env["COMFYBURST_WORKER_JOB_MODELS_DIR"] == f"{root.group(1)}/job-models"
    assert "MODEL_STORE_DIR" in text and "base_path: ${JOB_MODELS_DIR}" in text


def test_catalogue_goes_where_the_api_reads_it():
    text = (SCRIPTS / "07-export-catalogue.sh").read_text(encoding="utf-8")
    default = FunctionSettings.model_fields["catalogue_object"].default
    assert default is not PydanticUndefined
    assert f"CATALOGUE_OBJECT={default}\n" in text
    assert "/object_info" in text


def test_comfyui_commit_is_pinned():
    packer_vars = hcl.load(hcl.GPU_IMAGE / "variables.pkr.hcl")["variable"]
    commit = next(v["comfyui_commit"]["default"] for v in packer_vars if "comfyui_commit" in v)
    assert commit == "a125cd84b054a57729b5eecab930ca9408719832"


def test_custom_nodes_are_pinned():
    for line in (hcl.GPU_IMAGE / "custom_nodes.txt").read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            name, url, commit = line.split()
            assert re.fullmatch(r"[A-Za-z0-9_.-]+", name) and url.startswith("https://")
            assert re.fullmatch(r"[0-9a-f]{40}", commit), line
