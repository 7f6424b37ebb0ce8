"""Rewrite the settings table of README.md from the declarations in ``fhirfus/settings.py``."""

from __future__ import annotations

from pathlib import Path

from fhirfus.settings import markdown_table

README = Path(__file__).resolve().parent.parent / "README.md"


def main() -> None:
    text = README.read_text()
    table = markdown_table().rstrip("\n")
    header = table.splitlines()[0]
    start = text.index(header)
    lines = text[start:].split("\n")
    end = next(i for i, line in enumerate(lines) if not line.startswith("|"))
    README.write_text(text[:start] + table + "\n" + "\n".join(lines[end:]))


if __name__ == "__main__":
    main()
