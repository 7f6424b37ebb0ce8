"""Site files as sites keep them: encodings, separators, Excel workbooks, German dates and numbers,
and one clear message (never a traceback) for a file that cannot be read."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest
from openpyxl import Workbook

from fhirfus.ingest.files import UnreadableFile, read_table
from fhirfus.ingest.mapping.engine import map_rows
from fhirfus.ingest.mapping.spec import load_spec
from fhirfus.ingest.mapping.values import LOCALES

REGISTRY = Path(__file__).resolve().parents[3] / "shared" / "data" / "site-registry"
SITE_A = REGISTRY / "example-site-a.csv"
needs_registry = pytest.mark.skipif(not SITE_A.is_file(), reason=f"shared site registry files not found at {REGISTRY}")


def reference_rows() -> list[dict[str, str]]:
    return list(csv.DictReader(SITE_A.open(encoding="utf-8")))


def write_csv(path: Path, rows: list[dict[str, str]], encoding: str, delimiter: str) -> Path:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), delimiter=delimiter)
    writer.writeheader()
    writer.writerows(rows)
    path.write_bytes(buffer.getvalue().encode(encoding))
    return path


@needs_registry
@pytest.mark.parametrize(("encoding", "delimiter"), [
    ("utf-8", ","), ("utf-8-sig", ","), ("cp1252", ";"), ("utf-8", "\t"), ("cp1252", "\t"), ("utf-8-sig", ";"),
])
def test_every_encoding_and_separator_reads_the_same_rows(tmp_path: Path, encoding: str, delimiter: str) -> None:
    rows = reference_rows()
    rows[0]["site_patient_id"] = "Aé01"  # one accented character: Windows-1252 must not break the file
    for row in rows:
        if row["site_patient_id"] == rows[1]["site_patient_id"]:
            row["site_patient_id"] = "Aé01"
    table = read_table(write_csv(tmp_path / "site.csv", rows, encoding, delimiter))
    assert table.delimiter == delimiter
    assert table.header == list(rows[0])
    assert table.rows == rows


@needs_registry
def test_windows_1252_is_recognised_and_named(tmp_path: Path) -> None:
    rows = reference_rows()
    rows[0]["site_patient_id"] = "Bé1"
    table = read_table(write_csv(tmp_path / "site.csv", rows, "cp1252", ","))
    assert table.encoding == "windows-1252"
    assert table.rows[0]["site_patient_id"] == "Bé1"


@needs_registry
def test_the_excel_workbook_of_a_site_imports_every_patient() -> None:
    table = read_table(REGISTRY / "example-site-c.xlsx")
    assert table.format == "xlsx"
    result = map_rows(load_spec("site-registry"), table.rows, "C")
    assert result.errors == []
    assert len(result.bundles) == len({r["site_patient_id"] for r in table.rows}) > 0


def test_workbook_cells_become_the_text_a_csv_would_hold(tmp_path: Path) -> None:
    from datetime import datetime

    book = Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.append(["site_patient_id", "visit_date", "sessions", "sdr", "note"])
    sheet.append(["X1", datetime(2022, 3, 15), 12, 0.38, None])
    sheet.append([None, None, None, None, None])  # blank rows are not rows
    book.save(tmp_path / "book.xlsx")
    table = read_table(tmp_path / "book.xlsx")
    assert table.rows == [{"site_patient_id": "X1", "visit_date": "2022-03-15", "sessions": "12", "sdr": "0.38", "note": ""}]


@needs_registry
def test_a_german_export_needs_its_locale_and_then_loads_every_patient() -> None:
    german = REGISTRY / "example-site-d-de.csv"
    table = read_table(german)
    assert (table.encoding, table.delimiter) == ("windows-1252", ";")
    assert "bemerkung" in table.header  # free text no mapping reads
    spec = load_spec("site-registry")
    as_iso = map_rows(spec, table.rows, "D")
    assert as_iso.bundles == {}
    assert any("--locale de" in e.reason for e in as_iso.errors)  # the reason says what to do
    as_german = map_rows(spec, table.rows, "D", LOCALES["de"])
    assert as_german.errors == []
    assert len(as_german.bundles) == len({r["site_patient_id"] for r in table.rows})
    first_session = next(e["resource"] for b in as_german.bundles.values() for e in b["entry"]
                         if e["resource"]["resourceType"] == "Procedure")
    assert first_session["performedDateTime"][4] == "-"  # stored as ISO


@needs_registry
def test_a_german_file_is_recognised_only_when_it_leaves_no_doubt() -> None:
    from fhirfus.ingest.plan import recognise_locale

    spec = load_spec("site-registry")
    german = read_table(REGISTRY / "example-site-d-de.csv").rows
    assert recognise_locale(spec, german) == LOCALES["de"]
    assert recognise_locale(spec, reference_rows()) is None
    mixed = [dict(r) for r in german]
    mixed[0]["visit_date"] = "2022-07-17"  # one ISO date among day-first ones: ask, do not guess
    assert recognise_locale(spec, mixed) is None
    result = map_rows(spec, mixed, "D")
    assert any("--locale de" in e.reason for e in result.errors)


@pytest.mark.parametrize(("text", "value"), [("0,47", 0.47), ("1.500,5", 1500.5), ("750", 750), ("0.5", 0.5)])
def test_decimal_commas_in_the_german_locale(text: str, value: float) -> None:
    from fhirfus.ingest.mapping.values import read_cell

    assert read_cell(load_spec("site-registry").column("max_energy_j"), text, LOCALES["de"]) == value


def reason(mapping: str, column: str, text: str, locale: str = "iso") -> str:
    """Why the cell is refused (CellError is a frozen dataclass, which pytest.raises cannot hold)."""
    from fhirfus.ingest.mapping.values import CellError, read_cell

    try:
        read_cell(load_spec(mapping).column(column), text, LOCALES[locale])
    except CellError as error:
        return error.reason
    raise AssertionError(f"{text!r} was accepted")


def test_day_first_dates_only_when_told() -> None:
    from fhirfus.ingest.mapping.values import read_cell

    column = load_spec("site-registry").column("visit_date")
    assert read_cell(column, "15.03.2022", LOCALES["de"]) == "2022-03-15"
    assert read_cell(column, "2022-03-15", LOCALES["de"]) == "2022-03-15"
    assert "--locale de" in reason("site-registry", "visit_date", "15.03.2022")
    assert "not a valid date" in reason("site-registry", "visit_date", "31.02.2022", "de")
    assert "--locale de" in reason("site-registry", "sdr", "0,38")


def test_coded_values_are_explained_with_their_labels() -> None:
    target = reason("redcap", "fus_target", "4")
    assert "1 (pallidothalamic-tract)" in target
    assert "3 (pallidothalamic-tract + vo-complex)" in target
    assert "PTT+Vo" in reason("site-registry", "target", "STN")


@pytest.mark.parametrize(("name", "content", "reason"), [
    ("empty.csv", b"", "empty"),
    ("blank.csv", b"\r\n\r\n", "empty"),
    ("binary.csv", b"\x00\x01\x02PNG", "not a text file"),
    ("old.xls", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 64, ".xls"),
    ("broken.xlsx", b"PK\x03\x04 not really a zip", "damaged"),
    ("bom-then-latin.csv", b"\xef\xbb\xbfsite_patient_id\r\nA\xe901\r\n", "not UTF-8"),
    ("undefined-bytes.csv", b"site_patient_id\r\nA\x8101\r\n", "neither UTF-8 nor Windows-1252"),
])
def test_an_unusable_file_is_one_clear_message(tmp_path: Path, name: str, content: bytes, reason: str) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(UnreadableFile) as error:
        read_table(path)
    assert reason in error.value.message
    assert name in error.value.message


def test_an_empty_workbook_is_one_clear_message(tmp_path: Path) -> None:
    Workbook().save(tmp_path / "empty.xlsx")
    with pytest.raises(UnreadableFile, match="empty"):
        read_table(tmp_path / "empty.xlsx")
