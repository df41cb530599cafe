"""Instance templates: stored as instanceTemplates.insert takes them, turned into VM specs."""

from __future__ import annotations

import re
from typing import Any, Literal

from localcloud.compute import _errors as errors
from localcloud.compute._config import InstanceSpec
from localcloud.compute._resources import API_ROOT, now_rfc3339, stable_id

# sourceInstanceTemplate may be a full URL, a partial one, or `global/instanceTemplates/x`.
_REF_RE = re.compile(
    r"^(?:(?:https?://[^/]+)?/?compute/v1/)?(?:projects/(?P<project>[^/]+)/)?"
    r"(?:global|regions/(?P<region>[^/]+))/instanceTemplates/(?P<name>[^/]+)$"
)
_PROVISIONING_MODELS: dict[str, Literal["STANDARD", "SPOT"]] = {
    "STANDARD": "STANDARD",
    "SPOT": "SPOT",
}


def region_of(zone: str) -> str:
    """`us-central1-a` -> `us-central1`."""
    return zone.rsplit("-", 1)[0]


def template_path(project: str, region: str | None, name: str) -> str:
    """`projects/p/global/instanceTemplates/n` (or the regional form)."""
    scope = f"regions/{region}" if region else "global"
    return f"projects/{project}/{scope}/instanceTemplates/{name}"


class TemplateBook:
    """The templates of one project; not thread-safe (the fleet's lock guards it)."""

    def __init__(self, project: str, templates: list[dict[str, Any]]) -> None:
        self._project = project
        self._templates: dict[tuple[str | None, str], dict[str, Any]] = {}
        for body in templates:
            self.insert(body.get("region"), body)

    def insert(self, region: str | None, body: dict[str, Any]) -> dict[str, Any]:
        """instanceTemplates.insert: a new template (names are unique per scope)."""
        name = body.get("name")
        if not isinstance(name, str) or not name:
            raise errors.invalid("name", str(name), "A template needs a name.")
        properties = body.get("properties")
        if not isinstance(properties, dict) or not properties.get("machineType"):
            raise errors.invalid(
                "properties.machineType", "", "A template needs properties.machineType."
            )
        path = template_path(self._project, region, name)
        if (region, name) in self._templates:
            raise errors.already_exists(path)
        stored = {
            "kind": "compute#instanceTemplate",
            "id": str(stable_id(path)),
            "creationTimestamp": now_rfc3339(),
            "name": name,
            "description": body.get("description", ""),
            "properties": properties,
            "selfLink": API_ROOT + path,
        }
        if region:
            stored["region"] = API_ROOT + f"projects/{self._project}/regions/{region}"
        self._templates[(region, name)] = stored
        return stored

    def get(self, region: str | None, name: str) -> dict[str, Any]:
        """instanceTemplates.get."""
        found = self._templates.get((region, name))
        if found is None:
            raise errors.not_found(template_path(self._project, region, name))
        return found

    def resolve(self, ref: str, zone: str) -> dict[str, Any]:
        """The template a `sourceInstanceTemplate` names, for an insert into `zone`."""
        match = _REF_RE.match(ref.strip())
        if match is None:
            raise errors.invalid("sourceInstanceTemplate", ref, "Not an instance template URL.")
        project, region, name = match["project"], match["region"], match["name"]
        if project not in (None, self._project):
            raise errors.not_found(template_path(project, region, name))
        if region is not None and region != region_of(zone):
            raise errors.invalid(
                "sourceInstanceTemplate",
                ref,
                f"A regional template of {region} cannot create an instance in {zone}.",
            )
        return self.get(region, name)


def _short(value: Any) -> str:
    # Template properties name types by bare name; tolerate URLs too.
    return str(value).rsplit("/", 1)[-1]


def _metadata_items(metadata: Any) -> dict[str, str]:
    items = (metadata or {}).get("items") or []
    return {str(i["key"]): str(i.get("value", "")) for i in items if i.get("key")}


def spec_from_template(template: dict[str, Any], zone: str, body: dict[str, Any]) -> InstanceSpec:
    """The VM an insert creates: the template's properties, overridden by the insert body."""
    props = template["properties"]
    name = body.get("name")
    if not isinstance(name, str):
        raise errors.invalid("resource.name", str(name), "The instance needs a name.")
    accelerators = body.get("guestAccelerators") or props.get("guestAccelerators") or []
    accelerator = accelerators[0] if accelerators else {}
    scheduling = {**(props.get("scheduling") or {}), **(body.get("scheduling") or {})}
    model = scheduling.get("provisioningModel") or "STANDARD"
    if scheduling.get("preemptible"):
        model = "SPOT"  # a preemptible VM is preempted the same way here
    provisioning = _PROVISIONING_MODELS.get(model)
    if provisioning is None:  # Compute's enum for scheduling.provisioningModel
        raise errors.invalid("resource.scheduling.provisioningModel", str(model), "")
    metadata = {**_metadata_items(props.get("metadata")), **_metadata_items(body.get("metadata"))}
    try:
        return InstanceSpec(
            name=name,
            zone=zone,
            labels={**(props.get("labels") or {}), **(body.get("labels") or {})},
            machine_type=_short(body.get("machineType") or props["machineType"]),
            accelerator_type=(
                _short(accelerator["acceleratorType"])
                if accelerator.get("acceleratorType")
                else None
            ),
            accelerator_count=int(accelerator.get("acceleratorCount") or 0),
            provisioning_model=provisioning,
            termination_action=scheduling.get("instanceTerminationAction") or "STOP",
            metadata=metadata,
            source_template=template["selfLink"],
        )
    except ValueError as exc:
        raise errors.invalid("resource", name, str(exc).splitlines()[0]) from None
