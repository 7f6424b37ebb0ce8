"""Site files as sites keep them → a header and rows of text cells, or one clear reason why not.

Sites save their registry from Excel or a statistics package: CSV in UTF-8, UTF-8 with a BOM or
Windows-1252 (German, French … Excel), separated by ``,``, ``;`` or tabs, or an ``.xlsx`` workbook
whose cells are dates and numbers rather than text. Everything is turned into the text the
mapping reads (dates ISO, numbers plainly written), so the mapping does not care where a row
came from. A file that cannot be read raises :class:`UnreadableFile` naming the file and the
reason; it never escapes as a decoding or zip error.
"""

from __future__ import annotations

import csv
import io
import zipfile
from dataclasses import dataclass
from datetime import date, datetime, time
from pathlib import Path
from typing import Any

from fhirfus.errors import InvalidRequest

DELIMITERS = (",", ";", "\t")
XLSX_MAGIC = b"PK\x03\x04"
OLD_EXCEL_MAGIC = b"\xd0\xcf\x11\xe0"


class UnreadableFile(InvalidRequest):
    """The file is not a site table fhirfus can read (the message says why and what to do)."""


@dataclass(frozen=True)
class SiteTable:
    name: str
    header: list[str]
    rows: list[dict[str, str]]
    format: str          # "csv" or "xlsx"
    encoding: str | None  # of a CSV file
    delimiter: str | None


def read_table(path: Path) -> SiteTable:
    """The header and rows of a CSV/TSV or XLSX site file."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UnreadableFile(f"{path.name}: cannot be read ({exc.strerror or exc})", "file") from exc
    if data.startswith(XLSX_MAGIC):
        return _xlsx(path.name, data)
    if data.startswith(OLD_EXCEL_MAGIC):
        raise UnreadableFile(f"{path.name}: an old Excel .xls workbook; save it as .xlsx or CSV", "file")
    return _csv(path.name, data)


def _decode(name: str, data: bytes) -> tuple[str, str]:
    if b"\x00" in data:
        raise UnreadableFile(f"{name}: not a text file (it contains NUL bytes); expected CSV or XLSX", "file")
    if data.startswith(b"\xef\xbb\xbf"):
        return data[3:].decode("utf-8", errors="strict"), "utf-8-sig"
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        pass
    try:
        return data.decode("cp1252"), "windows-1252"
    except UnicodeDecodeError as exc:
        raise UnreadableFile(
            f"{name}: byte {exc.start + 1} is neither UTF-8 nor Windows-1252 text; save the file as CSV UTF-8", "file",
        ) from exc


def _delimiter(header_line: str) -> str:
    """The separator of the header line: the candidate that occurs most (a header has no quotes)."""
    counts = {d: header_line.count(d) for d in DELIMITERS}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] else ","


def _csv(name: str, data: bytes) -> SiteTable:
    try:
        text, encoding = _decode(name, data)
    except UnicodeDecodeError as exc:  # a BOM followed by bytes that are not UTF-8
        raise UnreadableFile(f"{name}: starts as UTF-8 but byte {exc.start + 4} is not UTF-8", "file") from exc
    lines = text.splitlines()
    if not lines or not lines[0].strip():
        raise UnreadableFile(f"{name}: the file is empty (expected a header line of column names)", "file")
    delimiter = _delimiter(lines[0])
    try:
        reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
        header = [h.strip() for h in next(reader)]
        rows = [_row(header, cells) for cells in reader if any(c.strip() for c in cells)]
    except csv.Error as exc:
        raise UnreadableFile(f"{name}: not readable as CSV ({exc})", "file") from exc
    return SiteTable(name, header, rows, "csv", encoding, delimiter)


def _row(header: list[str], cells: list[str]) -> dict[str, str]:
    row = {column: cells[i] if i < len(cells) else "" for i, column in enumerate(header) if column}
    return row


def _xlsx(name: str, data: bytes) -> SiteTable:
    from openpyxl import load_workbook

    try:
        workbook = load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    except (zipfile.BadZipFile, KeyError, OSError, ValueError) as exc:
        raise UnreadableFile(f"{name}: a damaged or unsupported workbook ({exc}); save it again as .xlsx or CSV", "file") from exc
    try:
        sheet = workbook.worksheets[0]
        cells = [[_text(v) for v in row] for row in sheet.iter_rows(values_only=True)]
    finally:
        workbook.close()
    cells = [row for row in cells if any(c.strip() for c in row)]
    if not cells:
        raise UnreadableFile(f"{name}: the first sheet is empty (expected a header row of column names)", "file")
    header = [h.strip() for h in cells[0]]
    return SiteTable(name, header, [_row(header, row) for row in cells[1:]], "xlsx", None, None)


def _text(value: Any) -> str:
    """A cell as the text a CSV would hold: dates ISO, whole numbers without ``.0``."""
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.date().isoformat() if value.time() == time(0) else value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    return str(value)
