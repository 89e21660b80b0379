"""docs/settings.md is generated from the settings themselves, so that it cannot drift from them."""

from __future__ import annotations

from pathlib import Path

from service.settings import Settings, settings_reference

DOC = Path(__file__).resolve().parents[3] / "docs" / "settings.md"


def test_settings_reference_is_current() -> None:
    assert DOC.read_text() == settings_reference(), (
        "regenerate with: python -m service --write-settings-doc docs/settings.md"
    )


def test_settings_reference_lists_every_setting_with_its_description() -> None:
    text = settings_reference()
    for name, field in Settings.model_fields.items():
        assert f"`AE_{name.upper()}`" in text
        assert field.description, f"{name} has no docstring"
