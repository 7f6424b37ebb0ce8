"""The official SQL on FHIR v2 conformance suite against fhirfus.sqlonfhir.runner.

One pytest case per suite test (id ``<file stem>/<title>``).  Each case records its outcome
before asserting, and at the end of the session a report in the suite's ``test_report``
shape is written to a temporary directory and the pass rate per file is printed, so the
numbers published for this runner are the ones pytest actually checked.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from fhirfus.sqlonfhir.runner import (
    ViewDefinitionError,
    ViewEvaluationError,
    run_view,
    validate_view,
    view_columns,
)

SUITE_DIR = Path("/work/shared/data/sql-on-fhir-v2/tests")

if not SUITE_DIR.is_dir():
    pytest.skip(f"SQL on FHIR v2 test suite not found at {SUITE_DIR}", allow_module_level=True)

SUITES: dict[str, dict[str, Any]] = {
    path.name: json.loads(path.read_text(encoding="utf-8")) for path in sorted(SUITE_DIR.glob("*.json"))
}
CASES = [
    pytest.param(file_name, index, id=f"{Path(file_name).stem}/{case['title']}")
    for file_name, suite in SUITES.items()
    for index, case in enumerate(suite["tests"])
]


class _SuiteReport:
    """Collects outcomes and, as a pytest plugin, writes/prints them at the end of the session."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.results: dict[str, dict[int, bool]] = {}

    def record(self, file_name: str, index: int, passed: bool) -> None:
        self.results.setdefault(file_name, {})[index] = passed

    def as_test_report(self) -> dict[str, dict[str, list[dict[str, Any]]]]:
        return {
            file_name: {
                "tests": [
                    {"name": SUITES[file_name]["tests"][i]["title"], "result": {"passed": passed}}
                    for i, passed in sorted(outcomes.items())
                ]
            }
            for file_name, outcomes in sorted(self.results.items())
        }

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if not self.results:
            return
        self.path.write_text(json.dumps(self.as_test_report(), indent=2), encoding="utf-8")
        terminalreporter.section("SQL on FHIR v2 conformance")
        total = passed = 0
        for file_name, outcomes in sorted(self.results.items()):
            ok = sum(outcomes.values())
            total, passed = total + len(outcomes), passed + ok
            terminalreporter.write_line(f"{Path(file_name).stem:<20} {ok:>3}/{len(outcomes):<3}")
        terminalreporter.write_line(f"{'total':<20} {passed:>3}/{total:<3} ({100 * passed / total:.1f}%)")
        terminalreporter.write_line(f"test_report: {self.path}")


@pytest.fixture(scope="session")
def suite_report(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> _SuiteReport:
    report = _SuiteReport(tmp_path_factory.mktemp("sql_on_fhir") / "test_report.json")
    request.config.pluginmanager.register(report, "sql-on-fhir-suite-report")
    return report


def _normalize(value: Any) -> Any:
    """JSON has one number type: 5 and 5.0 are the same value in an expected row."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, dict):
        return {key: _normalize(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_normalize(item) for item in value]
    return value


def _multiset(rows: list[dict[str, Any]]) -> Counter[str]:
    return Counter(json.dumps(_normalize(row), sort_keys=True) for row in rows)


def _failure(case: dict[str, Any], resources: list[dict[str, Any]]) -> str | None:
    """Why ``case`` fails, or None when it passes."""
    view = case["view"]
    if case.get("expectError"):
        try:
            rows = list(run_view(view, resources))
        except (ViewDefinitionError, ViewEvaluationError):
            return None
        return f"expected an error, got {len(rows)} rows: {rows}"
    if errors := validate_view(view):
        return f"valid view rejected: {errors}"
    rows = list(run_view(view, resources))
    columns = [column["name"] for column in view_columns(view)]
    if "expectColumns" in case and columns != case["expectColumns"]:
        return f"columns {columns} != expected {case['expectColumns']}"
    if bad_keys := [list(row) for row in rows if list(row) != columns]:
        return f"row keys {bad_keys[0]} differ from view_columns {columns}"
    if "expectCount" in case and len(rows) != case["expectCount"]:
        return f"{len(rows)} rows != expected count {case['expectCount']}"
    if "expect" in case and _multiset(rows) != _multiset(case["expect"]):
        return f"rows differ (order-insensitive)\n got:      {rows}\n expected: {case['expect']}"
    return None


@pytest.mark.parametrize(("file_name", "index"), CASES)
def test_sql_on_fhir_case(file_name: str, index: int, suite_report: _SuiteReport) -> None:
    suite = SUITES[file_name]
    failure = _failure(suite["tests"][index], suite["resources"])
    suite_report.record(file_name, index, failure is None)
    assert failure is None, failure
