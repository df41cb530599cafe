"""A build job (`job.environment_build`): build the environment's layer on this VM and store it.

The layer goes to `environments/{environment_id}/layer.tar.gz` in the models bucket (the
worker's service account may write there: `worker-models` in terraform/iam.tf), its node types
to `environments/{environment_id}/catalogue.json` beside it, and the done flag reports both
(`DoneManifest.environment_built`); completion marks the environment ready or failed.
"""

from __future__ import annotations

import json
import logging
import shlex
import time
from dataclasses import dataclass
from pathlib import Path

from comfyburst.domain.custom_node_sources import PackInvalid, parse_pack
from comfyburst.domain.urls import UrlRefused, UrlRule, check_url
from comfyburst.ports import BlobStore
from comfyburst.schema import (
    MAX_ENV_OBJECT_INFO_BYTES,
    DoneStatus,
    EnvironmentBuilt,
    Job,
    JobError,
    WorkerTimings,
)
from comfyburst_worker.env_build import BuildFailed, BuiltLayer, LayerBuilder
from comfyburst_worker.env_layers import archive_name, catalogue_name
from comfyburst_worker.env_reap import BuildReaper
from comfyburst_worker.env_reap import of_settings as reaper_of_settings
from comfyburst_worker.env_registry import registry_of
from comfyburst_worker.job_runner import RunResult

log = logging.getLogger(__name__)

ERROR_TYPE = "environment_build"


@dataclass
class EnvBuildResult(RunResult):
    """A build job's result: what it built, when it succeeded."""

    environment_built: EnvironmentBuilt | None = None


def build_folder(layers_dir: Path, environment_id: str) -> Path:
    """Where a build job builds: `builds/` is the build user's (the image makes it so)."""
    return layers_dir / "builds" / environment_id


class EnvBuildRunner:
    """Runs build jobs; like JobRunner, never raises for a failed build (it is the result)."""

    def __init__(
        self,
        blobs: BlobStore,
        bucket: str | None,
        layers_dir: Path,
        builder: LayerBuilder | None,
        test_hostports: tuple[str, ...] = (),
        reaper: BuildReaper | None = None,
    ) -> None:
        self.blobs, self.bucket, self.layers_dir = blobs, bucket, layers_dir
        self.builder, self.test_hostports = builder, test_hostports
        # Ends the build user's processes around each build (None: builds have no own user).
        self.reaper = reaper

    @classmethod
    def of_settings(cls, settings: object, blobs: BlobStore, config: object) -> EnvBuildRunner:
        """From WorkerSettings (`env_*`) and the deployment config (`models_bucket`)."""
        base = getattr(settings, "env_base_python", None)
        as_user = getattr(settings, "env_build_as", "") or ""
        build_user = getattr(settings, "env_build_user", "") or ""
        # Pack code never runs as the worker's own user (its token, its files) unless the
        # settings say so explicitly (the local cloud, where there is no second user); with a
        # prefix, only as a named build user whose every process is ended around each build.
        prefixed = bool(as_user.strip()) and bool(build_user.strip())
        isolated = prefixed or bool(getattr(settings, "env_build_unisolated", False))
        pip = tuple(shlex.split(getattr(settings, "env_pip_command", "") or ""))
        builder = None
        if base is not None and isolated:
            builder = LayerBuilder(
                base_python=Path(base),
                pip_args=tuple(shlex.split(getattr(settings, "env_pip_args", "") or "")),
                # A pip the build's user may run (the worker's own venv is closed to them).
                pip_command=pip or LayerBuilder.pip_command,
                as_user=tuple(shlex.split(as_user)),
                comfyui_dir=getattr(settings, "env_comfyui_dir", None),
                registry=registry_of(config),
            )
        folders = [
            Path(folder)
            for name in ("comfyui_input_dir", "comfyui_output_dir", "comfyui_temp_dir")
            if (folder := getattr(settings, name, None)) is not None
        ]
        # None where builds have no own user (no prefix, no build user or no base venv).
        python = Path(base) if base is not None else None
        reaper = reaper_of_settings(build_user, shlex.split(as_user), python, folders)
        return cls(
            blobs,
            getattr(config, "models_bucket", None),
            Path(getattr(settings, "env_layers_dir", "/var/lib/comfyburst/environments")),
            builder,
            tuple(h.lower() for h in getattr(config, "http_model_hosts", []) or []),
            reaper,
        )

    def run(self, job: Job) -> EnvBuildResult:
        timings = WorkerTimings()
        t0 = time.monotonic()
        try:
            built = self._build(job)
        except BuildFailed as exc:
            log.warning("job %s: environment build failed: %s", job.job_id, exc.text())
            error = JobError(type=ERROR_TYPE, message=exc.text())
            return EnvBuildResult(DoneStatus.FAILED, error=error, timings=timings)
        except Exception as exc:  # storage, disk: the job fails, not the agent
            log.exception("job %s: environment build broke", job.job_id)
            error = JobError(type="worker_error", message=f"build broke ({type(exc).__name__})")
            return EnvBuildResult(DoneStatus.FAILED, error=error, timings=timings)
        finally:
            timings.execution_s = round(time.monotonic() - t0, 4)
        return EnvBuildResult(DoneStatus.SUCCEEDED, timings=timings, environment_built=built)

    def _build(self, job: Job) -> EnvironmentBuilt:
        spec = job.environment_build
        assert spec is not None
        if self.builder is None or self.bucket is None:
            raise BuildFailed(None, "this VM cannot build environments (no base venv or bucket)")
        for text in spec.packs:
            self._check_pack(text)
        # A process an earlier build left (it failed to end after it) refuses this build: it
        # could write into this build's folder, and so into a shared environment's layer.
        if self.reaper is not None:
            self.reaper.reap("before the build")
        # The layer folder is the build user's (`builds/`, see build_folder); the archive the
        # worker's, beside it.
        layer = build_folder(self.layers_dir, spec.environment_id)
        archive = self.layers_dir / f"{spec.environment_id}.tar.gz"
        self.builder.remove(layer)  # a crashed attempt's leftovers
        self.layers_dir.mkdir(parents=True, exist_ok=True)
        # The pack's code (a private one's too) leaves this VM's disk with the build: no later
        # job's pack code, run as the same user, can read it. A folder left behind fails the job.
        try:
            try:
                built = self.builder.build(spec.packs, layer, archive)
            except BaseException:
                self._reap_quietly(job.job_id)
                raise
            # Before anything is stored: a survivor fails the job (and refuses the next build).
            if self.reaper is not None:
                self.reaper.reap("after the build")
            stored = self._store(self.bucket, spec.environment_id, built)
        except BaseException:
            archive.unlink(missing_ok=True)
            try:
                self.builder.remove(layer)
            except BuildFailed as exc:  # the build's own failure is the one to report
                log.error("job %s: the build folder stays: %s", job.job_id, exc.text())
            raise
        archive.unlink(missing_ok=True)
        self.builder.remove(layer)
        return stored

    def _reap_quietly(self, job_id: str) -> None:
        """After a failed build: its own error is the one reported; a survivor refuses the next."""
        if self.reaper is None:
            return
        try:
            self.reaper.reap("after the build")
        except BuildFailed as exc:
            log.error("job %s: %s", job_id, exc.text())

    def _store(self, bucket: str, environment_id: str, built: BuiltLayer) -> EnvironmentBuilt:
        name = archive_name(environment_id)
        self.blobs.upload_file(bucket, name, str(built.archive), "application/gzip")
        catalogue = {"environment_id": environment_id, "packs": built.node_types}
        self.blobs.write(
            bucket,
            catalogue_name(environment_id),
            json.dumps(catalogue, sort_keys=True).encode(),
            "application/json",
        )
        object_info = json.dumps(built.object_info, sort_keys=True, separators=(",", ":"))
        if len(object_info.encode()) > MAX_ENV_OBJECT_INFO_BYTES:
            raise BuildFailed(None, "the packs' /object_info is larger than 512 KiB")
        return EnvironmentBuilt(
            environment_id=environment_id,
            node_types=built.all_node_types,
            archive=f"gs://{bucket}/{name}",
            object_info_json=object_info,
        )

    def _check_pack(self, text: str) -> None:
        """The API checked the packs; the worker checks again before git reaches anything."""
        try:
            pack = parse_pack(text, test_hostports=self.test_hostports)
            if pack.kind != "git":
                return  # the registry's URLs are the deployer's, checked as they are fetched
            check_url(pack.source, UrlRule.of([pack.host], (), self.test_hostports))
        except (PackInvalid, UrlRefused) as exc:
            raise BuildFailed(text, f"refused: {exc}") from None
