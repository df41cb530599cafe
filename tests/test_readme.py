"""The README's generated settings tables match the settings classes."""

from pathlib import Path

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
