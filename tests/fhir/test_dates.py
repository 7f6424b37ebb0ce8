"""Specification of FHIR date parsing into UTC ranges (fhirfus.fhir.dates)."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from fhirfus.fhir.dates import UTC_MAX, SearchDate, fhir_search_date, parse_date_range


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)


# --------------------------------------------------------------------------- stored values


def test_partial_year_covers_whole_year() -> None:
    assert parse_date_range("1970") == (utc(1970, 1, 1), utc(1971, 1, 1))


def test_partial_month_covers_whole_month() -> None:
    assert parse_date_range("1970-02") == (utc(1970, 2, 1), utc(1970, 3, 1))


def test_december_ends_at_the_next_year() -> None:
    assert parse_date_range("1970-12") == (utc(1970, 12, 1), utc(1971, 1, 1))


def test_date_covers_whole_day() -> None:
    assert parse_date_range("1970-03-04") == (utc(1970, 3, 4), utc(1970, 3, 5))


def test_datetime_without_seconds_covers_one_minute() -> None:
    assert parse_date_range("1970-03-04T10:00") == (utc(1970, 3, 4, 10, 0), utc(1970, 3, 4, 10, 1))


def test_datetime_with_seconds_covers_one_second() -> None:
    assert parse_date_range("1970-03-04T10:00:05") == (utc(1970, 3, 4, 10, 0, 5), utc(1970, 3, 4, 10, 0, 6))


def test_fraction_digits_set_the_range_width() -> None:
    assert parse_date_range("1970-03-04T10:00:05.25Z") == (
        utc(1970, 3, 4, 10, 0, 5, 250000),
        utc(1970, 3, 4, 10, 0, 5, 260000),
    )


def test_fraction_beyond_microseconds_is_truncated() -> None:
    low, high = parse_date_range("1970-03-04T10:00:05.1234567Z")
    assert (low.microsecond, high.microsecond) == (123456, 123457)


def test_zone_offset_is_converted_to_utc() -> None:
    assert parse_date_range("2015-02-07T13:28:17-05:00")[0] == utc(2015, 2, 7, 18, 28, 17)


def test_value_without_zone_is_taken_as_utc() -> None:
    assert parse_date_range("2015-02-07T13:28:17")[0] == utc(2015, 2, 7, 13, 28, 17)


def test_range_ends_are_timezone_aware_utc() -> None:
    low, high = parse_date_range("2015-02-07T13:28:17+02:00")
    assert low.tzinfo is UTC and high.tzinfo is UTC


def test_leap_second_rolls_into_the_next_minute() -> None:
    assert parse_date_range("2016-12-31T23:59:60Z") == (utc(2017, 1, 1), utc(2017, 1, 1, 0, 0, 1))


def test_last_representable_year_is_clamped_to_the_maximum() -> None:
    assert parse_date_range("9999") == (utc(9999, 1, 1), UTC_MAX)


def test_surrounding_whitespace_is_ignored() -> None:
    assert parse_date_range(" 1970 ") == parse_date_range("1970")


def test_malformed_text_raises_value_error_naming_it() -> None:
    with pytest.raises(ValueError, match=r"'banana'.*expected YYYY"):
        parse_date_range("banana")


def test_impossible_month_raises_value_error() -> None:
    with pytest.raises(ValueError, match=r"'2021-13-01'.*month must be in 1\.\.12"):
        parse_date_range("2021-13-01")


def test_impossible_day_raises_value_error() -> None:
    with pytest.raises(ValueError, match="'2021-02-30'"):
        parse_date_range("2021-02-30")


def test_impossible_hour_raises_value_error() -> None:
    with pytest.raises(ValueError, match="hour"):
        parse_date_range("2021-02-01T24:00")


def test_zone_offset_beyond_fourteen_hours_raises_value_error() -> None:
    with pytest.raises(ValueError, match="zone offset"):
        parse_date_range("2021-02-01T10:00:00+15:00")


def test_time_without_date_raises_value_error() -> None:
    with pytest.raises(ValueError):
        parse_date_range("10:00:00")


def test_search_prefix_is_not_accepted_in_stored_values() -> None:
    with pytest.raises(ValueError):
        parse_date_range("ge2021")


# --------------------------------------------------------------------------- search values


def test_search_date_without_seconds_as_sent_by_fhir_pyrate() -> None:
    assert fhir_search_date("ge2021-01-01T00:00") == SearchDate("ge", utc(2021, 1, 1), utc(2021, 1, 1, 0, 1))


def test_search_date_without_prefix_means_equal() -> None:
    assert fhir_search_date("2021").prefix == "eq"


def test_search_date_accepts_every_fhir_prefix() -> None:
    prefixes = ["eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap"]
    assert [fhir_search_date(p + "2021").prefix for p in prefixes] == prefixes


def test_search_date_accepts_hour_only_time() -> None:
    assert fhir_search_date("2021-01-01T10") == SearchDate("eq", utc(2021, 1, 1, 10), utc(2021, 1, 1, 11))


def test_search_date_accepts_space_left_by_an_unencoded_plus() -> None:
    assert fhir_search_date("2021-01-01T10:00:00 01:00").low == utc(2021, 1, 1, 9)


def test_search_date_accepts_zone_without_colon() -> None:
    assert fhir_search_date("2021-01-01T10:00-0130").low == utc(2021, 1, 1, 11, 30)


def test_search_date_rejects_unknown_prefix() -> None:
    with pytest.raises(ValueError, match="'xx2021'"):
        fhir_search_date("xx2021")


def test_search_date_rejects_impossible_date() -> None:
    with pytest.raises(ValueError, match=r"month must be in 1\.\.12"):
        fhir_search_date("ge2021-13-01")


def test_full_datetimes_parse_the_same_on_the_fast_path_as_on_the_general_one() -> None:
    """``parse_date_range`` hands dateTimes to the second (or finer) with a zone to the C parser;
    every one of them must come out exactly as the general, regex-based path computes it."""
    from fhirfus.fhir import dates

    rng = random.Random(3)
    samples = ["2019-03-25T12:45:60.5Z", "0001-01-01T00:00:00.1+01:00", "9999-12-31T23:59:59.99-14:00"]
    for _ in range(2000):
        moment = datetime(1900, 1, 1) + timedelta(seconds=rng.randint(0, 4_000_000_000))
        fraction = "" if rng.random() < 0.3 else "." + str(rng.randint(0, 999_999)).zfill(6)[: rng.randint(1, 6)]
        zone = rng.choice(["Z", "+01:00", "-05:30", "+14:00", "-00:00"])
        samples.append(moment.strftime("%Y-%m-%dT%H:%M:%S") + fraction + zone)
    for text in samples:
        match = dates._VALUE_RE.fullmatch(text)
        assert match is not None
        assert dates.parse_date_range(text) == dates._range(text, match.groupdict()), text


def test_plain_dates_parse_the_same_on_the_fast_path_as_on_the_general_one() -> None:
    """A whole day (``YYYY-MM-DD``) skips the general path; it must give the general path's range,
    to the last day of time, and leave impossible days to it (which names them)."""
    from fhirfus.fhir import dates

    rng = random.Random(4)
    samples = ["0001-01-01", "9999-12-31", "2020-02-29", "2021-12-31"]
    days = [datetime(1, 1, 1) + timedelta(days=rng.randint(0, 3_652_058)) for _ in range(2000)]
    samples += [f"{day.year:04d}-{day.month:02d}-{day.day:02d}" for day in days]
    for text in samples:
        match = dates._VALUE_RE.fullmatch(text)
        assert match is not None
        assert dates.parse_date_range(text) == dates._range(text, match.groupdict()), text
    with pytest.raises(ValueError, match=r"'2021-02-30'.*day is out of range"):
        parse_date_range("2021-02-30")
