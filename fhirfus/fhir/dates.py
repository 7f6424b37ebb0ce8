"""FHIR date, dateTime and instant values as UTC ranges.

FHIR dates carry their precision: ``1970`` means the whole of 1970, and the
search rules compare ranges, not points.  Every value therefore becomes a
half-open range ``[low, high)`` of timezone-aware UTC datetimes: ``low`` is the
first instant the value covers and ``high`` the first instant it no longer
covers (so ``1970`` is ``[1970-01-01T00:00Z, 1971-01-01T00:00Z)``).  Half-open
ranges tile without gaps or overlaps, which keeps the SQL comparisons simple.

Values without a zone (dates, partial dateTimes, zone-less search values) are
taken as UTC: the server has no better knowledge of the writer's local time,
and one fixed rule keeps writes and searches consistent.

Ranges that would leave Python's datetime range are clamped to
:data:`UTC_MIN` / :data:`UTC_MAX`, which also stand for open Period ends.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

UTC_MIN = datetime.min.replace(tzinfo=UTC)
UTC_MAX = datetime.max.replace(tzinfo=UTC)

_EXPECTED = "expected YYYY, YYYY-MM, YYYY-MM-DD or YYYY-MM-DDThh:mm[:ss[.fff]][Z|+hh:mm|-hh:mm]"

_VALUE_RE = re.compile(
    r"(?P<year>\d{4})(?:-(?P<month>\d{2})(?:-(?P<day>\d{2})"
    r"(?:T(?P<hour>\d{2}):(?P<minute>\d{2})(?::(?P<second>\d{2})(?:\.(?P<fraction>\d+))?)?"
    r"(?P<zone>Z|[+-]\d{2}:\d{2})?)?)?)?"
)

#: A dateTime to the second (or to at most microseconds) with a zone of at most ±14:00 (what FHIR allows).
_SECONDS_RE = re.compile(
    r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.(?P<fraction>\d{1,6}))?(?:Z|[+-](?:0\d|1[0-4]):[0-5]\d)"
)

#: A plain date (``birthDate``, most ``effective``/``onset``/``performed`` values in research data).
_DAY_RE = re.compile(r"(\d{4})-(\d{2})-(\d{2})")
_ONE_DAY = timedelta(days=1)

# What clients put in search URLs: a comparison prefix, an hour-only time,
# zones without a colon, lower-case letters, and a space where an unencoded
# '+' was decoded.
_SEARCH_RE = re.compile(
    r"(?P<prefix>eq|ne|gt|lt|ge|le|sa|eb|ap)?"
    r"(?P<year>\d{4})(?:-(?P<month>\d{2})(?:-(?P<day>\d{2})"
    r"(?:[Tt](?P<hour>\d{2})(?::(?P<minute>\d{2})(?::(?P<second>\d{2})(?:\.(?P<fraction>\d+))?)?)?"
    r"(?P<zone>[Zz]|[+\- ]\d{2}:?\d{2})?)?)?)?"
)


@dataclass(frozen=True)
class SearchDate:
    """A parsed date search value: comparison prefix (``eq`` by default) and its range."""

    prefix: str
    low: datetime
    high: datetime


def parse_date_range(text: str) -> tuple[datetime, datetime]:
    """Turn a stored date/dateTime/instant into a half-open ``[low, high)`` UTC range.

    Partial values are allowed (``1970``, ``1970-03``, ``1970-03-04T10:00``);
    raises ``ValueError`` naming the value when it is not a FHIR date.
    """
    seconds = _SECONDS_RE.fullmatch(text) if isinstance(text, str) else None
    if seconds is not None:
        # The common case (a dateTime to the second or finer, with its zone) by the C parser:
        # indexing parses a date or two per resource, and the general path costs ~5× as much.
        try:
            moment = datetime.fromisoformat(text).astimezone(UTC)
        except (ValueError, OverflowError):
            pass  # leap second, edge of time: the general path knows what to do
        else:
            fraction = seconds["fraction"]
            return moment, moment + (_fraction_step(fraction) if fraction else timedelta(seconds=1))
    day = _DAY_RE.fullmatch(text) if isinstance(text, str) else None
    if day is not None:
        # The other common case, a whole day: a fifth of the general path's cost.
        try:
            low = datetime(int(day[1]), int(day[2]), int(day[3]), tzinfo=UTC)
            return low, (low + _ONE_DAY if low.date() < UTC_MAX.date() else UTC_MAX)
        except ValueError:
            pass  # 2021-02-30: the general path names the error
    match = _VALUE_RE.fullmatch(text.strip()) if isinstance(text, str) else None
    if match is None:
        raise ValueError(f"invalid FHIR date {text!r}: {_EXPECTED}")
    return _range(text, match.groupdict())


def fhir_search_date(text: str) -> SearchDate:
    """Parse a date search value as clients send it (``ge2021-01-01T00:00``, ``...T10``, ``+0100``).

    Raises ``ValueError`` on anything that is not a (prefixed) FHIR date.
    """
    match = _SEARCH_RE.fullmatch(text.strip()) if isinstance(text, str) else None
    if match is None:
        raise ValueError(f"invalid date search value {text!r}: optional prefix (eq, ge, ...) then {_EXPECTED}")
    parts = match.groupdict()
    low, high = _range(text, parts)
    return SearchDate(prefix=parts["prefix"] or "eq", low=low, high=high)


def _range(text: str, parts: dict[str, str | None]) -> tuple[datetime, datetime]:
    """Compute the UTC range of matched date parts, reporting calendar errors against ``text``."""
    try:
        start = datetime(
            int(parts["year"] or 0),
            int(parts["month"] or 1),
            int(parts["day"] or 1),
            int(parts["hour"] or 0),
            int(parts["minute"] or 0),
        )
        offset = _zone_offset(parts["zone"])
    except ValueError as exc:
        raise ValueError(f"invalid FHIR date {text!r}: {exc}") from None
    seconds, fraction = parts["second"], parts["fraction"]
    if seconds is not None and int(seconds) > 60:
        raise ValueError(f"invalid FHIR date {text!r}: second must be in 0..60")
    start_delta = timedelta(seconds=int(seconds or 0), microseconds=_microseconds(fraction))
    low = _shift(start, start_delta - offset)
    high = _shift(_end_of_precision(start, parts), start_delta - offset)
    return low, high


def _zone_offset(zone: str | None) -> timedelta:
    """The UTC offset of a zone designator; no zone means UTC."""
    if zone is None or zone in ("Z", "z"):
        return timedelta(0)
    digits = zone[1:].replace(":", "")
    hours, minutes = int(digits[:2]), int(digits[2:])
    if hours > 14 or minutes > 59:
        raise ValueError(f"zone offset {zone.strip()} is out of range")
    sign = -1 if zone[0] == "-" else 1
    return sign * timedelta(hours=hours, minutes=minutes)


def _microseconds(fraction: str | None) -> int:
    """Fractional seconds as microseconds (digits beyond six are dropped)."""
    return int((fraction or "0")[:6].ljust(6, "0"))


def _fraction_step(fraction: str) -> timedelta:
    """One unit of a fractional second's precision (``.5`` → 0.1 s; at most microseconds)."""
    return timedelta(microseconds=10 ** max(0, 6 - len(fraction)))


def _end_of_precision(start: datetime, parts: dict[str, str | None]) -> datetime:
    """``start`` plus one unit of the value's precision.

    ``start`` excludes seconds and fraction: the caller adds those to both ends,
    so e.g. ``10:00:07.5`` becomes ``[10:00:07.5, 10:00:07.6)``.
    """
    fraction = parts["fraction"]
    if fraction is not None:
        return _plus(start, _fraction_step(fraction))
    if parts["second"] is not None:
        return _plus(start, timedelta(seconds=1))
    if parts["minute"] is not None:
        return _plus(start, timedelta(minutes=1))
    if parts["hour"] is not None:
        return _plus(start, timedelta(hours=1))
    if parts["day"] is not None:
        return _plus(start, timedelta(days=1))
    if parts["month"] is not None:
        return _first_of_next_month(start)
    return _first_of_next_year(start)


def _plus(start: datetime, step: timedelta) -> datetime:
    """``start + step``, clamped at the end of time (``9999-12-31`` ends there, not in an OverflowError)."""
    try:
        return start + step
    except OverflowError:
        return datetime.max


def _first_of_next_month(start: datetime) -> datetime:
    """The first instant of the month after ``start`` (clamped at the end of time)."""
    if start.month == 12:
        return _first_of_next_year(start)
    return start.replace(month=start.month + 1)


def _first_of_next_year(start: datetime) -> datetime:
    """The first instant of the year after ``start`` (clamped at the end of time)."""
    if start.year == datetime.max.year:
        return datetime.max
    return start.replace(year=start.year + 1, month=1)


def _shift(naive: datetime, delta: timedelta) -> datetime:
    """Add ``delta`` to a naive UTC wall time and make it aware, clamping instead of overflowing."""
    if naive == datetime.max:
        return UTC_MAX
    try:
        return (naive + delta).replace(tzinfo=UTC)
    except OverflowError:
        return UTC_MIN if delta < timedelta(0) else UTC_MAX
