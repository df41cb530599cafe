"""The local cloud's GPU classes: stand-in templates and the functions' settings for them."""

from __future__ import annotations

import json

from localcloud.config import LocalCloudConfig, LocalGpuClass

TEMPLATE_PREFIX = "comfyburst-gpu-"


def _region(zone: str) -> str:
    return zone.rsplit("-", 1)[0]


def _regions(cls: LocalGpuClass) -> list[str]:
    return list(dict.fromkeys(_region(z) for z in cls.zones))


def zones(cfg: LocalCloudConfig) -> list[str]:
    """Every zone of the local cloud: the pool's, then each class's."""
    return list(dict.fromkeys([*cfg.zones, *(z for c in cfg.gpu_classes for z in c.zones)]))


def templates(cfg: LocalCloudConfig, labels: dict[str, str]) -> list[dict[str, object]]:
    """One regional template per class and region, shaped as terraform/compute.tf's."""
    found: list[dict[str, object]] = []
    for cls in cfg.gpu_classes:
        for region in _regions(cls):
            scheduling: dict[str, object] = {
                "onHostMaintenance": "TERMINATE",
                "automaticRestart": False,
                "provisioningModel": "SPOT" if cls.spot else "STANDARD",
            }
            if cls.spot:
                scheduling["instanceTerminationAction"] = "STOP"
            found.append(
                {
                    "name": TEMPLATE_PREFIX + cls.name,
                    "region": region,
                    "properties": {
                        "machineType": "g2-standard-8",
                        "guestAccelerators": [
                            {"acceleratorType": "nvidia-l4", "acceleratorCount": 1}
                        ],
                        "labels": labels,
                        "scheduling": scheduling,
                    },
                }
            )
    return found


def settings_env(cfg: LocalCloudConfig) -> dict[str, str]:
    """COMFYBURST_GPU_CLASSES (and the fallback) for the functions."""
    declared = [
        {
            "name": cls.name,
            "machine_type": "g2-standard-8",
            "accelerator_type": "nvidia-l4",
            "accelerator_count": 1,
            "spot": cls.spot,
            "zones": list(cls.zones),
            "price_per_hour": cls.price_per_hour,
            "templates": {
                region: f"projects/{cfg.project_id}/regions/{region}/instanceTemplates/"
                f"{TEMPLATE_PREFIX}{cls.name}"
                for region in _regions(cls)
            },
            "max_vms": cfg.pool_size,
            "max_vms_per_zone": cfg.pool_size,
        }
        for cls in cfg.gpu_classes
    ]
    env = {"COMFYBURST_GPU_CLASSES": json.dumps(declared)}
    if cfg.preemption_fallback_class:
        env["COMFYBURST_PREEMPTION_FALLBACK_CLASS"] = cfg.preemption_fallback_class
    return env
