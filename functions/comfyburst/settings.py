"""Settings of each deployable, read once in its entry point (environment, prefix COMFYBURST_)."""

from __future__ import annotations

from enum import Enum
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import (
    BeforeValidator,
    Field,
    PrivateAttr,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from comfyburst.domain import gpu_classes as _classes
from comfyburst.domain import warm as _warm
from comfyburst.domain.caller_limits import CallerLimits
from comfyburst.domain.custom_node_sources import PackInvalid, SourcePolicy
from comfyburst.domain.gpu_classes import GpuClass, GpuClasses
from comfyburst.domain.urls import UrlRefused, UrlRule, check_url
from comfyburst.schema import DeploymentConfig, DispatchOrder

# The ComfyUI commit gpu_image/variables.pkr.hcl bakes by default (a test holds them equal).
IMAGE_COMFYUI_COMMIT = "a125cd84b054a57729b5eecab930ca9408719832"
DEFAULT_MODEL_HOSTS = ["civitai.com", "huggingface.co", "storage.googleapis.com"]
# Where those hosts redirect large downloads: Hugging Face's CDN and Xet storage (hf.co),
# Civitai's signed Cloudflare R2 links. Allowed for redirect hops only, never for a submitted
# URL and never sent a token.
DEFAULT_MODEL_REDIRECT_HOSTS = ["hf.co", "r2.cloudflarestorage.com", "civitai.com"]


def _split_list(value: object) -> object:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


# Lists come from the environment as comma-separated values.
CsvList = Annotated[list[str], NoDecode, BeforeValidator(_split_list)]


def _classes_of(data: Any, fallback: str | None) -> GpuClasses:
    return _classes.build(
        data["gpu_classes"],
        data.get("default_gpu_class"),
        fallback,
        pool_template=data.get("pool_template", ""),
        pool_zones=data.get("pool_zones", []),
        pool_max_vms=data.get("pool_max_vms", 8),
        pool_max_vms_per_zone=data.get("pool_max_vms_per_zone", 4),
    )


class AuthMode(str, Enum):
    IAM = "iam"  # Cloud Run checks the caller's Google ID token before our code runs
    API_KEY = "api_key"  # our code checks X-API-Key against hashed keys


class FunctionSettings(BaseSettings):
    """Settings of the Cloud Functions (API, done-flag trigger, reaper)."""

    model_config = SettingsConfigDict(env_prefix="COMFYBURST_", extra="ignore")
    # (inputs, classes): rebuilt when a copy (`model_copy(update=...)`) changed the inputs.
    _gpu_class_cache: tuple[str, GpuClasses] | None = PrivateAttr(default=None)

    project_id: str = Field(description="Google Cloud project id")
    jobs_bucket: str = Field(description="Bucket for request.json, inputs and the catalogue")
    outputs_bucket: str = Field(description="Bucket the worker uploads outputs to")
    signals_bucket: str = Field(description="Bucket for done.json flags (the trigger's bucket)")
    models_bucket: str | None = Field(default=None, description="Optional model mirror bucket")
    results_topic: str = Field(description="Pub/Sub topic id for result messages")
    jobs_collection: str = Field(
        default="jobs", description="Firestore collection of job documents"
    )
    vms_collection: str = Field(
        default="vms", description="Firestore collection of per-VM lease documents"
    )
    idempotency_collection: str = Field(
        default="idempotency", description="Firestore collection of Idempotency-Key documents"
    )
    pool_label: str = Field(
        default="comfyburst-pool=default", description="key=value label selecting the GPU VMs"
    )
    pool_zones: CsvList = Field(default_factory=list, description="Zones of the GPU pool")
    compute_endpoint: str | None = Field(
        default=None, description="Compute API endpoint override (the local stand-in)"
    )
    boot_timeout_s: int = Field(
        default=600, description="A job starting longer than this is retried on another VM"
    )
    heartbeat_timeout_s: int = Field(
        default=120, description="A running job without a heartbeat this long is retried"
    )
    heartbeat_interval_s: float = Field(
        default=5.0, description="How often the worker heartbeats (sent to VMs)"
    )
    lease_ttl_s: int = Field(
        default=900, description="Lifetime of a VM lease; the worker renews it while it works"
    )
    max_attempts: int = Field(
        default=3, description="Attempts per job before it fails (infrastructure faults only)"
    )
    drain_grace_s: float = Field(
        default=30.0,
        description="How long an idle worker looks for the next job before powering off",
    )
    dispatch_grace_s: float = Field(
        default=10.0,
        description="The reaper dispatches a queued job only this long after it was queued",
    )
    stockout_cooldown_s: int = Field(
        default=300, description="How long a VM is skipped after its zone reported a stockout"
    )
    pool_template: str = Field(
        default="",
        description="Instance template new GPU VMs are created from (empty: never create)",
    )
    pool_name_prefix: str = Field(
        default="comfyburst-gpu", description="Name prefix of the GPU VMs the dispatcher creates"
    )
    pool_max_vms: int = Field(
        default=8, ge=0, description="Most GPU VMs of the pool, stopped ones included"
    )
    pool_max_vms_per_zone: int = Field(
        default=4, ge=0, description="Most GPU VMs of the pool in any one zone"
    )
    pool_price_per_hour: float = Field(
        default=0.0,
        ge=0,
        description="USD per VM hour of the pool's class when no gpu_classes are declared "
        "(receipts)",
    )
    gpu_classes: list[GpuClass] = Field(
        default_factory=list,
        description="GPU classes as a JSON list (docs/ARCHITECTURE.md, GPU classes); "
        "empty: one class `default` from the pool_* settings",
    )
    default_gpu_class: str | None = Field(
        default=None, description="The class of jobs that ask for none; default: the first"
    )
    preemption_fallback_class: str | None = Field(
        default=None,
        validate_default=True,
        description="A standard (not Spot) class a job moves to when its preemptions reach "
        "the cap; none: such a job keeps its class",
    )
    create_wait_s: float = Field(
        default=3.0,
        ge=0,
        description="How long a create waits for Compute's capacity check before moving on",
    )
    vm_idle_delete_days: float = Field(
        default=14.0,
        gt=0,
        description="The reaper deletes a stopped VM the dispatcher created, unused this long",
    )
    job_ttl_days: int = Field(
        default=30, description="Job documents expire (Firestore TTL) this many days after creation"
    )
    max_workflow_bytes: int = Field(default=2_000_000, description="Largest accepted request body")
    max_nodes: int = Field(default=2000, description="Most nodes in one workflow")
    max_input_bytes: int = Field(
        default=20_000_000, description="Largest total of decoded input images per job"
    )
    model_hosts: CsvList = Field(
        description="Hosts (and their subdomains) model URLs may come from over https",
        default_factory=lambda: list(DEFAULT_MODEL_HOSTS),
    )
    model_redirect_hosts: CsvList = Field(
        default_factory=lambda: list(DEFAULT_MODEL_REDIRECT_HOSTS),
        description="Hosts (and subdomains) a model download may be redirected to; no token",
    )
    http_model_hosts: CsvList = Field(
        default_factory=list, description="host:port allowed over http; local tests only"
    )
    gs_model_buckets: CsvList = Field(
        description="Buckets gs:// model URLs may come from (the models bucket is added)",
        default_factory=list,
    )
    auth_mode: AuthMode = Field(
        default=AuthMode.IAM,
        description="iam (Cloud Run checks Google ID tokens) or api_key (X-API-Key header)",
    )
    api_key_hashes: CsvList = Field(
        default_factory=list,
        description="sha256 hex of accepted API keys, each NAME=HEX to name its caller "
        "(from Secret Manager)",
    )
    admin_principals: CsvList = Field(
        default_factory=list,
        description="Callers who see every job: key:NAME or an ID token's email (docs/SECURITY.md)",
    )
    caller_limits: CallerLimits = Field(
        default_factory=CallerLimits,
        description="Per-caller limits as JSON: a default and per-principal overrides of "
        "max_queued, max_running and gpu_classes (domain/caller_limits.py, docs/DEPLOY.md); "
        "{}: none",
    )
    dispatch_order: DispatchOrder = Field(
        default=DispatchOrder.FAIR,
        description="Which queued job of a class starts next: fair (fair share between "
        "callers) or fifo (the oldest, whoever's; for comparison); domain/fair_share.py",
    )
    model_upload_principals: CsvList = Field(
        default_factory=list,
        description="Callers who may upload their own model files (POST /uploads): key:NAME, "
        "an ID token's email, or * for every authenticated caller; admins may too",
    )
    max_model_upload_bytes: int = Field(
        default=64 * 1024**3, ge=1, description="Largest model file one upload may declare"
    )
    signing_key_file: str | None = Field(
        default=None, description="Service-account key file for signing URLs (local only)"
    )
    signing_service_account: str | None = Field(
        default=None, description="SA email for key-less signing; default: the runtime SA"
    )
    catalogue_object: str = Field(
        default="catalogue/object_info.json",
        description="Object in the jobs bucket holding the image node catalogue",
    )
    comfyui_commit: str = Field(
        default=IMAGE_COMFYUI_COMMIT,
        pattern=r"^[0-9a-f]{40}$",
        description="The ComfyUI commit baked into the GPU image (environment ids hash it)",
    )
    custom_node_sources: CsvList = Field(
        default_factory=list,
        description="Custom-node packs environments may build: HOST, HOST/OWNER, "
        "HOST/OWNER/REPO, registry:ID or registry:*; empty: environments are off",
    )
    trusted_custom_node_sources: CsvList = Field(
        default_factory=list,
        description="Sources whose packs make shared environments; any other pack makes an "
        "environment private to its creator (same entry forms)",
    )
    custom_node_registry_url: str | None = Field(
        default=None,
        description="Base URL of the Comfy registry's API that registry packs (ID@VERSION) are "
        "fetched from; none: registry packs are refused (registry_not_configured)",
    )
    custom_node_registry_download_hosts: CsvList = Field(
        default_factory=list,
        description="Hosts (and subdomains) the registry's pack archives may be downloaded "
        "from over https, redirects included",
    )
    environments_collection: str = Field(
        default="environments", description="Firestore collection of environment documents"
    )
    environment_access_collection: str = Field(
        default="environment_access",
        description="Firestore collection recording which caller asked for which environment",
    )
    civitai_token_secret: str | None = Field(
        default=None,
        description="Secret Manager secret name of the Civitai token (name, not value)",
    )
    huggingface_token_secret: str | None = Field(
        default=None, description="Secret Manager secret name of the Hugging Face token"
    )
    civitai_token_scope: CsvList = Field(
        default_factory=lambda: ["https://civitai.com/api/download/"],
        description="URL prefixes the Civitai token is sent to; any download URL a caller "
        "gives under them carries it (docs/SECURITY.md)",
    )
    huggingface_token_scope: CsvList = Field(
        default_factory=lambda: ["https://huggingface.co/"],
        description="URL prefixes the Hugging Face token is sent to; any download URL a "
        "caller gives under them carries it (docs/SECURITY.md)",
    )

    webhook_secret: str | None = Field(
        default=None,
        description="Current webhook signing secret, whsec_... (from Secret Manager)",
    )
    webhook_secret_previous: str | None = Field(
        default=None,
        description="The secret being rotated out; it signs too while set (Secret Manager)",
    )
    webhook_timeout_s: float = Field(
        default=10.0, description="How long a webhook receiver may take to answer"
    )
    webhook_allow_loopback: bool = Field(
        default=False,
        description="Accept http:// webhook URLs to loopback receivers (local cloud only)",
    )

    @field_validator("custom_node_sources", "trusted_custom_node_sources")
    @classmethod
    def _check_sources(cls, value: list[str], info: ValidationInfo) -> list[str]:
        # A malformed entry fails the deploy, not the first environment request. An entry may
        # name a test host:port (http_model_hosts, declared above: the local cloud's).
        tests = tuple(h.strip().lower() for h in info.data.get("http_model_hosts") or ())
        try:
            SourcePolicy.of(value, tests)
        except PackInvalid as exc:
            raise ValueError(str(exc)) from None
        return value

    @field_validator("custom_node_registry_url")
    @classmethod
    def _check_registry(cls, value: str | None, info: ValidationInfo) -> str | None:
        # The one outbound URL rule with its own host allowed (a test host:port in the local
        # cloud), so a wrong URL fails the deploy, not each build.
        if value is None or not value.strip():
            return None
        tests = tuple(h.strip().lower() for h in info.data.get("http_model_hosts") or ())
        try:
            check_url(value, UrlRule.of([urlsplit(value).hostname or ""], (), tests))
        except UrlRefused as exc:
            raise ValueError(f"custom_node_registry_url {exc}") from None
        if urlsplit(value).query or urlsplit(value).fragment:
            raise ValueError("custom_node_registry_url must not have a query or fragment")
        return value.rstrip("/")

    @field_validator("preemption_fallback_class")
    @classmethod
    def _check_gpu_classes(cls, value: str | None, info: ValidationInfo) -> str | None:
        # Checked at load, so a wrong declaration fails the deploy, not the first job; as a
        # field check (declared after the fields it reads), so an error never echoes the
        # whole settings input, secrets included.
        if "gpu_classes" in info.data and "pool_max_vms_per_zone" in info.data:
            _classes_of(info.data, value)
        return value

    @field_validator("caller_limits")
    @classmethod
    def _check_caller_limits(cls, value: CallerLimits, info: ValidationInfo) -> CallerLimits:
        # A limit naming a class the deployment lacks fails the deploy, not a caller's submit
        # (a field check, like the classes' own: an error never echoes the whole input).
        if "gpu_classes" in info.data and "preemption_fallback_class" in info.data:
            names = _classes_of(info.data, info.data["preemption_fallback_class"]).names
            unknown = sorted(value.class_names() - set(names))
            if unknown:
                raise ValueError(
                    f"caller_limits: unknown GPU classes {', '.join(unknown)}; "
                    f"known: {', '.join(names)}"
                )
        return value

    @model_validator(mode="after")
    def _keep_gpu_classes(self) -> FunctionSettings:
        self.gpu_class_set()
        return self

    def gpu_class_set(self) -> GpuClasses:
        """The checked GPU classes (declared, or the one derived from the pool_* settings)."""
        inputs = repr(
            (
                self.gpu_classes,
                self.default_gpu_class,
                self.preemption_fallback_class,
                self.pool_template,
                self.pool_zones,
                self.pool_max_vms,
                self.pool_max_vms_per_zone,
            )
        )
        cached = self._gpu_class_cache
        if cached is None or cached[0] != inputs:
            cached = (inputs, _classes_of(self.__dict__, self.preemption_fallback_class))
            self._gpu_class_cache = cached
        return cached[1]

    def fleet_zones(self) -> list[str]:
        """Every zone the pool's VMs may be in: the classes' zones, then pool_zones."""
        return list(dict.fromkeys([*self.gpu_class_set().zones(), *self.pool_zones]))

    def deployment_config(self) -> DeploymentConfig:
        """What a VM needs to know, without secrets."""
        return DeploymentConfig(
            project_id=self.project_id,
            jobs_bucket=self.jobs_bucket,
            outputs_bucket=self.outputs_bucket,
            signals_bucket=self.signals_bucket,
            models_bucket=self.models_bucket,
            jobs_collection=self.jobs_collection,
            vms_collection=self.vms_collection,
            heartbeat_interval_s=self.heartbeat_interval_s,
            lease_ttl_s=self.lease_ttl_s,
            drain_grace_s=self.drain_grace_s,
            default_gpu_class=self.gpu_class_set().default,
            preemption_fallback_class=self.gpu_class_set().fallback,
            model_hosts=self.model_hosts,
            model_redirect_hosts=self.model_redirect_hosts,
            http_model_hosts=self.http_model_hosts,
            gs_model_buckets=self.all_model_buckets(),
            custom_node_registry_url=self.custom_node_registry_url,
            custom_node_registry_download_hosts=self.custom_node_registry_download_hosts,
            civitai_token_scope=self.civitai_token_scope,
            huggingface_token_scope=self.huggingface_token_scope,
            civitai_token_secret=self.civitai_token_secret,
            huggingface_token_secret=self.huggingface_token_secret,
            running_limits=self.caller_limits.running_limits(),
            dispatch_order=self.dispatch_order,
            warm_schedule={
                c.name: _warm.dump_windows(c.warm) for c in self.gpu_class_set().classes if c.warm
            },
        )

    def all_model_buckets(self) -> list[str]:
        buckets = list(self.gs_model_buckets)
        if self.models_bucket and self.models_bucket not in buckets:
            buckets.append(self.models_bucket)
        return buckets

    def pool_label_pair(self) -> tuple[str, str]:
        key, _, value = self.pool_label.partition("=")
        return key.strip(), value.strip()
