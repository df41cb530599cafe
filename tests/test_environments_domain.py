"""Environments, pure: pinned packs, the deployer's sources, ids, privacy and job use."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from comfyburst.domain.custom_node_sources import Pack, PackInvalid, SourcePolicy, parse_pack
from comfyburst.domain.environments import (
    ENV_ID_PATTERN,
    Environment,
    EnvironmentBuilding,
    EnvironmentInvalid,
    EnvironmentsDisabled,
    EnvironmentState,
    EnvironmentUnusable,
    PackNotAllowed,
    can_see,
    canonical_packs,
    check_still_allowed,
    check_usable,
    environment_id,
    plan_environment,
)
from comfyburst.schema import JobOptions
from comfyburst.settings import IMAGE_COMFYUI_COMMIT, FunctionSettings
from tests._api_support import make_settings
from tests.deploy import hcl

C1, C2 = "1" * 40, "2" * 40
COMMIT = IMAGE_COMFYUI_COMMIT
NOW = datetime(2026, 1, 1, tzinfo=UTC)
OPEN = SourcePolicy.of(["github.com", "registry:*"])
NONE = SourcePolicy.of([])


def _plan(texts: list[str], caller: str | None = "key:ana", trusted: SourcePolicy = OPEN) -> str:
    return plan_environment(
        texts, sources=OPEN, trusted=trusted, comfyui_commit=COMMIT, caller=caller
    ).environment_id


@pytest.mark.parametrize(
    "text",
    [
        f"https://github.com/Owner/Repo@{C1}",
        f"https://GitHub.com/Owner/Repo.git@{C1}",
        f"https://github.com/Owner/Repo/@{C1.upper()}",
        f"https://github.com:443/Owner/Repo@{C1}",
    ],
)
def test_a_git_pack_has_one_canonical_text(text: str) -> None:
    assert parse_pack(text).text == f"https://github.com/Owner/Repo@{C1}"


@pytest.mark.parametrize(
    ("text", "why"),
    [
        (f"http://github.com/o/r@{C1}", "https"),
        (f"https://github.com/o/r@{C1[:12]}", "40 hex"),
        ("https://github.com/o/r@main", "40 hex"),
        ("https://github.com/o/r", "pinned"),
        (f"https://127.0.0.1/o/r@{C1}", "IP address"),
        (f"https://2130706433/o/r@{C1}", "IP address"),
        (f"https://localhost/o/r@{C1}", "private host"),
        (f"https://git.internal/o/r@{C1}", "private host"),
        (f"https://github.com:22/o/r@{C1}", "port"),
        (f"https://user@github.com/o/r@{C1}", "user info"),
        (f"https://github.com/o/r?x=1@{C1}", "query"),
        (f"https://github.com/r@{C1}", "OWNER/REPO"),
        (f"https://github.com/o/../r@{C1}", "OWNER/REPO"),
        (f"https://github.com/o/r%2e@{C1}", "OWNER/REPO"),
        (f"https://github.com/o/r name@{C1}", "spaces"),
        ("kjnodes@latest", "REGISTRY_ID@VERSION"),
        ("-bad@1.0.0", "REGISTRY_ID@VERSION"),
        ("", "at most"),
        ("x" * 700, "at most"),
    ],
)
def test_what_is_not_a_pinned_pack(text: str, why: str) -> None:
    with pytest.raises(PackInvalid, match=re.escape(why)):
        parse_pack(text)


def test_a_registry_pack() -> None:
    assert parse_pack("comfyui-kjnodes@1.0.5") == Pack("registry", "comfyui-kjnodes", "1.0.5")
    assert parse_pack("comfyui-kjnodes@1.0.5").text == "comfyui-kjnodes@1.0.5"


def test_sources_allow_hosts_owners_repos_and_registry_packs() -> None:
    policy = SourcePolicy.of(
        ["gitlab.com", "github.com/Comfy-Org", "codeberg.org/a/b", "registry:x"]
    )
    allowed = [
        f"https://gitlab.com/any/thing@{C1}",
        f"https://github.com/Comfy-Org/nodes@{C1}",
        f"https://codeberg.org/a/b@{C1}",
        "x@1.0",
    ]
    refused = [
        f"https://github.com/comfy-org/nodes@{C1}",  # case differs: refused
        f"https://github.com/Comfy-Org-evil/nodes@{C1}",
        f"https://sub.gitlab.com/a/b@{C1}",  # a subdomain is another host
        f"https://evilgitlab.com/a/b@{C1}",
        f"https://codeberg.org/a/c@{C1}",
        "y@1.0",
    ]
    assert all(policy.allows(parse_pack(t)) for t in allowed)
    assert not any(policy.allows(parse_pack(t)) for t in refused)
    assert SourcePolicy.of(["registry:*"]).allows(parse_pack("y@1.0"))
    assert NONE.empty and not NONE.allows(parse_pack("x@1.0"))


@pytest.mark.parametrize(
    "entry", ["https://github.com", "127.0.0.1", "localhost", "github.com:22", "registry:", "a/.."]
)
def test_a_malformed_source_entry_is_refused_and_fails_the_settings(entry: str) -> None:
    with pytest.raises(PackInvalid):
        SourcePolicy.of([entry])
    with pytest.raises(ValidationError):
        make_settings(custom_node_sources=[entry])


def test_settings_read_the_lists_and_default_to_off() -> None:
    assert make_settings().custom_node_sources == []
    settings = make_settings(custom_node_sources="github.com/a, registry:*")
    assert settings.custom_node_sources == ["github.com/a", "registry:*"]


_packs = st.lists(
    st.sampled_from([f"https://github.com/o/r{i}@{C1}" for i in range(5)] + ["a@1.0", "b@2.0.1"]),
    min_size=1,
    max_size=12,
)


@given(_packs, st.randoms())
def test_order_and_repetition_do_not_change_the_id(texts: list[str], rnd: object) -> None:
    shuffled = list(texts) * 2
    rnd.shuffle(shuffled)  # type: ignore[attr-defined]
    assert _plan(texts) == _plan(shuffled)
    assert re.fullmatch(ENV_ID_PATTERN, _plan(texts))


@given(_packs)
def test_another_set_or_another_comfyui_is_another_id(texts: list[str]) -> None:
    packs = canonical_packs(texts)
    base = environment_id(packs, COMMIT, private=False, owner=None)
    assert environment_id(packs, "0" * 40, private=False, owner=None) != base
    extra = canonical_packs([*texts, "zzz@9.9"])
    assert environment_id(extra, COMMIT, private=False, owner=None) != base


def test_one_repository_at_two_commits_is_refused() -> None:
    with pytest.raises(EnvironmentInvalid, match="two refs") as refused:
        canonical_packs([f"https://github.com/o/r@{C1}", f"https://github.com/o/r.git@{C2}"])
    assert refused.value.field == "packs.1"
    with pytest.raises(EnvironmentInvalid, match="two refs"):
        canonical_packs(["a@1.0", "a@1.1"])


def test_empty_and_oversized_sets_are_refused() -> None:
    with pytest.raises(EnvironmentInvalid):
        canonical_packs([])
    with pytest.raises(EnvironmentInvalid, match="at most 64"):
        canonical_packs([f"p{i}@1.0" for i in range(65)])


def test_the_deployer_decides_what_is_built_and_what_is_shared() -> None:
    texts = [f"https://github.com/o/r@{C1}"]
    with pytest.raises(EnvironmentsDisabled):
        plan_environment(texts, sources=NONE, trusted=NONE, comfyui_commit=COMMIT, caller="a")
    with pytest.raises(PackNotAllowed) as refused:
        plan_environment(
            ["a@1.0", f"https://gitlab.com/o/r@{C1}"],
            sources=OPEN,
            trusted=OPEN,
            comfyui_commit=COMMIT,
            caller="a",
        )
    assert refused.value.field == "packs.1" and refused.value.http_status == 403
    # Trusted: one id for everyone. Untrusted: private, one id per creator.
    assert _plan(texts, "key:ana") == _plan(texts, "key:bo")
    assert _plan(texts, "key:ana", NONE) != _plan(texts, "key:bo", NONE)
    assert _plan(texts, "key:ana", NONE) == _plan(texts, "key:ana", NONE)
    assert _plan(texts, None, NONE) != _plan(texts, "key:ana", NONE) != _plan(texts, "key:ana")
    planned = plan_environment(
        texts, sources=OPEN, trusted=NONE, comfyui_commit=COMMIT, caller="key:ana"
    )
    doc = planned.new_document(NOW)
    assert (doc.private, doc.owner, doc.state) == (True, "key:ana", EnvironmentState.BUILDING)


def _env(state: EnvironmentState, private: bool, owner: str | None = "key:ana") -> Environment:
    return Environment(
        environment_id="env-" + "a" * 64,
        packs=["a@1.0"],
        comfyui_commit=COMMIT,
        state=state,
        error="pip failed" if state is EnvironmentState.FAILED else None,
        private=private,
        owner=owner if private else None,
        created_at=NOW,
        state_changed_at=NOW,
    )


def test_who_sees_and_who_runs_in_an_environment() -> None:
    ready = EnvironmentState.READY
    assert can_see("key:bo", _env(ready, False), ())
    assert not can_see("key:bo", _env(ready, True), ())
    assert can_see("key:ops", _env(ready, True), {"key:ops"})
    assert check_usable(_env(ready, True), "key:ana").private
    assert check_usable(_env(ready, False), "key:bo").state is ready
    for env, caller in (
        (None, "key:ana"),
        (_env(ready, True), "key:bo"),
        (_env(ready, True), None),
    ):
        with pytest.raises(EnvironmentUnusable, match="no such environment"):
            check_usable(env, caller)
    with pytest.raises(EnvironmentUnusable, match="pip failed"):
        check_usable(_env(EnvironmentState.FAILED, False), "key:ana")
    with pytest.raises(EnvironmentBuilding) as building:
        check_usable(_env(EnvironmentState.BUILDING, False), "key:ana")
    assert building.value.http_status == 409 and building.value.code == "environment_building"


def test_what_the_deployer_withdraws_runs_no_more_jobs() -> None:
    """The lists as they are now: a built environment whose source was removed, or a shared
    one whose pack is no longer trusted, is refused; a private one needs no trust."""
    ready = EnvironmentState.READY
    only_b = SourcePolicy.of(["registry:b"])
    check_still_allowed(_env(ready, False), OPEN, OPEN)
    check_still_allowed(_env(ready, True), OPEN, NONE)
    with pytest.raises(EnvironmentUnusable, match="no longer among"):
        check_still_allowed(_env(ready, True), only_b, NONE)
    with pytest.raises(EnvironmentUnusable, match="no longer trusted"):
        check_still_allowed(_env(ready, False), OPEN, only_b)


def test_a_job_option_names_an_environment_by_its_id() -> None:
    assert JobOptions(environment="env-" + "0" * 64).environment == "env-" + "0" * 64
    for bad in ("env-XYZ", "0" * 64, "env-" + "0" * 63):
        with pytest.raises(ValidationError):
            JobOptions(environment=bad)
    assert JobOptions.model_fields["environment"].metadata[0].pattern == ENV_ID_PATTERN


def test_the_settings_comfyui_commit_is_the_one_the_image_bakes() -> None:
    packer_vars = hcl.load(hcl.GPU_IMAGE / "variables.pkr.hcl")["variable"]
    baked = next(v["comfyui_commit"]["default"] for v in packer_vars if "comfyui_commit" in v)
    assert make_settings().comfyui_commit == baked == IMAGE_COMFYUI_COMMIT


def test_terraform_passes_the_sources_and_indexes_the_callers_list() -> None:
    variables = hcl.variables()
    for name in ("custom_node_sources", "trusted_custom_node_sources"):
        assert variables[name]["default"] == [], name
        assert f"COMFYBURST_{name.upper()}" in str(hcl.locals_()["function_env"]), name
    index = hcl.resources("google_firestore_index")["environment_access_caller_asked_at"]
    default = FunctionSettings.model_fields["environment_access_collection"].default
    assert index["collection"] == default
    fields = [(f["field_path"], f["order"]) for f in index["fields"]]
    assert fields == [
        ("caller", "ASCENDING"),
        ("asked_at", "DESCENDING"),
        ("__name__", "DESCENDING"),
    ]
