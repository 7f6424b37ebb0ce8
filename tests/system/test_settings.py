"""Every setting is declared once (``fhirfus.settings``); the README's table is made from the declarations."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from fhirfus.settings import Settings, markdown_table

ROOT = Path(__file__).resolve().parents[2]


def test_the_readme_configuration_table_is_the_declared_one() -> None:
    assert markdown_table() in (ROOT / "README.md").read_text(), "regenerate it: python tools/gen_readme_settings.py"


def test_values_come_from_the_environment_given() -> None:
    settings = Settings.from_env({"FHIRFUS_PAGE_SIZE": "7", "FHIRFUS_CORS_ORIGINS": "https://a, https://b",
                                  "FHIRFUS_DEID_KEY": "", "FHIRFUS_AUTH": "off"})
    assert settings.default_page_size == 7 and settings.auth == "off"
    assert settings.cors_origins == ("https://a", "https://b") and settings.deid_key is None
    with pytest.raises(SystemExit, match="FHIRFUS_PAGE_SIZE must be an integer"):
        Settings.from_env({"FHIRFUS_PAGE_SIZE": "many"})


def test_only_the_settings_module_reads_the_environment() -> None:
    """Settings are passed to whoever needs them: no module reads ``os.environ`` on its own."""
    readers = []
    for path in sorted((ROOT / "fhirfus").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr in ("environ", "getenv") and \
                    isinstance(node.value, ast.Name) and node.value.id == "os":
                readers.append(str(path.relative_to(ROOT)))
    assert sorted(set(readers)) == ["fhirfus/settings.py"]
