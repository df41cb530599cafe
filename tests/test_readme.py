"""The README's generated settings tables match the settings classes."""

import re
from pathlib import Path

import pytest

from tools.settings_doc import BEGIN, END, TABLES, render

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_settings_tables_are_current() -> None:
    text = README.read_text(encoding="utf-8")
    section = text[text.index(BEGIN) : text.index(END) + len(END)]
    assert section == render(), "README settings are stale: python -m tools.settings_doc"


def test_every_setting_is_described() -> None:
    missing = [
        f"{cls.__name__}.{name}"
        for _, cls in TABLES
        for name, field in cls.model_fields.items()
        if not field.description
    ]
    assert missing == []


def test_from_comfy_sdk_names_the_two_settings_the_pinned_sdk_reads(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The section's two exports are what comfy-sdk resolves: a client built after them (and
    nothing else) targets that URL with that key as its Bearer token."""
    from comfy_sdk import Comfy

    text = README.read_text(encoding="utf-8")
    section = text[text.index("## From comfy-sdk") :]
    block = section[section.index("```bash") : section.index("```", section.index("```bash") + 7)]
    exported = re.findall(r"^export (\w+)=", block, flags=re.MULTILINE)
    assert exported == ["COMFY_BASE_URL", "COMFY_API_KEY"]
    monkeypatch.setenv("COMFY_BASE_URL", "http://127.0.0.1:9/")
    monkeypatch.setenv("COMFY_API_KEY", "key-from-the-readme")
    client = Comfy()
    try:
        prepared = client._low._p  # the pinned SDK's resolved target (no public accessor)
        assert (prepared.base_url, prepared.api_key) == (
            "http://127.0.0.1:9",
            "key-from-the-readme",
        )
    finally:
        client.close()
