"""NDJSON output files, one series per resource type, split by resource count and size.

Lines arrive in batches (one database page at a time) and are written with one ``write`` per
type and batch; a file is closed and the next one of its type started when it reaches the
configured number of resources or bytes. Only small, fixed buffers are kept per open file, so
memory does not depend on how much is exported.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

NDJSON_SUFFIX = ".ndjson"


@dataclass(frozen=True)
class WrittenFile:
    """One finished file: what the manifest lists."""

    name: str
    kind: str          # "output" or "error"
    res_type: str
    seq: int
    count: int
    size: int


@dataclass
class _Open:
    handle: BinaryIO
    name: str
    seq: int
    count: int = 0
    size: int = 0


class NdjsonFileSet:
    """Writes ``{prefix}{Type}.{n}.ndjson`` files into ``directory``."""

    def __init__(
        self, directory: Path, *, max_resources: int, max_bytes: int, kind: str = "output", prefix: str = ""
    ) -> None:
        self.directory = directory
        self.prefix = prefix
        self.max_resources = max(1, max_resources)
        self.max_bytes = max(1, max_bytes)
        self.kind = kind
        self._open: dict[str, _Open] = {}
        self._sequence: dict[str, int] = {}
        self.files: list[WrittenFile] = []
        self.total = 0

    def write(self, res_type: str, lines: Iterable[bytes]) -> None:
        """Append resources (one JSON document each, no newline) of one type."""
        chunk: list[bytes] = []
        current = self._current(res_type)
        for line in lines:
            held = current.count + len(chunk)
            if held >= self.max_resources or (held and current.size >= self.max_bytes):
                self._flush(current, chunk)
                chunk = []
                self._close(res_type)
                current = self._current(res_type)
            chunk.append(line)
            current.size += len(line) + 1
        self._flush(current, chunk)

    def _flush(self, current: _Open, chunk: list[bytes]) -> None:
        if chunk:
            chunk.append(b"")
            current.handle.write(b"\n".join(chunk))
            current.count += len(chunk) - 1
            self.total += len(chunk) - 1

    def _current(self, res_type: str) -> _Open:
        current = self._open.get(res_type)
        if current is None:
            seq = self._sequence.get(res_type, 0) + 1
            self._sequence[res_type] = seq
            name = f"{self.prefix}{res_type}.{seq}{NDJSON_SUFFIX}"
            handle = (self.directory / name).open("wb")
            current = self._open[res_type] = _Open(handle, name, seq)
        return current

    def _close(self, res_type: str) -> None:
        current = self._open.pop(res_type)
        current.handle.close()
        if current.count:
            self.files.append(WrittenFile(current.name, self.kind, res_type, current.seq, current.count, current.size))
        else:
            (self.directory / current.name).unlink(missing_ok=True)
            self._sequence[res_type] = current.seq - 1

    def close(self) -> list[WrittenFile]:
        """Close every open file; the finished files in manifest order (type, then sequence)."""
        for res_type in list(self._open):
            self._close(res_type)
        return sorted(self.files, key=lambda f: (f.res_type, f.seq))

    def abort(self) -> None:
        """Close without keeping anything (the caller removes the directory)."""
        for current in self._open.values():
            current.handle.close()
        self._open.clear()
