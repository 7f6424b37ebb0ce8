"""Copy the official validator test cases fhirfus can be measured on into ``tests/data/validator-cases``.

Why: ``validator/manifest.json`` of FHIR/fhir-test-cases records, per case, what the reference Java
validator concluded. The cases kept are the R4 JSON ones that need nothing fhirfus cannot have: no
profile, IG package, supporting definitions, terminology server, external fetch or special option.
Each keeps the Java validator's verdict (its error and fatal issues), which
``tests/fhir/test_validator_cases.py`` compares with fhirfus's.

Usage (a checkout or bare mirror of the repository, and the commit to take)::

    python tools/vendor_validator_cases.py /path/to/fhir-test-cases/.git 2dee8a0f8fa0b948b4cd28f0edfc34a0322318fe
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

OUTPUT = Path(__file__).resolve().parent.parent / "tests" / "data" / "validator-cases"
R4 = ("4.0", "4.0.1")
#: Manifest keys that only describe a case, or name other validators' outcomes.
HARMLESS = frozenset({
    "name", "file", "version", "module", "java", "description", "explanation", "documentation", "comment",
    "firely-sdk-current", "firely-sdk-wip", "brianpos", "dotnet-brianpos", "tags", "use-test", "debug", "txLog",
})
#: Options that are harmless with one value: the harness's own resolver, which fetches nothing.
HARMLESS_VALUES = {"fetcher": "standalone"}
#: Modules that need a terminology server.
TERMINOLOGY = frozenset({"tx", "tx-advanced"})
MAX_BYTES = 256 * 1024
TX_SERVER = "http://hl7.org/fhir/StructureDefinition/operationoutcome-issue-server"


def _show(repo: str, commit: str, path: str) -> bytes:
    return subprocess.run(["git", "--git-dir", repo, "show", f"{commit}:{path}"], check=True, capture_output=True).stdout


def _exists(repo: str, commit: str, path: str) -> bool:
    return subprocess.run(["git", "--git-dir", repo, "cat-file", "-e", f"{commit}:{path}"], capture_output=True).returncode == 0


def _outcome(repo: str, commit: str, java: Any) -> tuple[list[dict], bool] | None:
    """The Java validator's error/fatal issues, and whether it consulted a terminology server."""
    if not isinstance(java, str) or not _exists(repo, commit, f"validator/outcomes/{java}"):
        return None
    outcome = json.loads(_show(repo, commit, f"validator/outcomes/{java}"))
    issues = outcome.get("issue", [])
    used_tx = any(ext.get("url") == TX_SERVER for issue in issues for ext in issue.get("extension", ()))
    errors = [
        {
            "severity": issue["severity"],
            "expression": (issue.get("expression") or [""])[0],
            "message": issue.get("details", {}).get("text", ""),
        }
        for issue in issues
        if issue.get("severity") in ("error", "fatal")
    ]
    return errors, used_tx


def select(repo: str, commit: str) -> tuple[dict[str, Any], dict[str, str]]:
    """(kept cases, left-out case → reason) among the R4 JSON cases."""
    manifest = json.loads(_show(repo, commit, "validator/manifest.json"))
    kept: dict[str, Any] = {}
    left_out: dict[str, str] = {}
    for case in manifest["test-cases"]:
        if case.get("version") not in R4 or not case["file"].endswith(".json"):
            continue
        name = case["file"]
        extra = sorted(k for k in set(case) - HARMLESS if HARMLESS_VALUES.get(k) != case[k])
        if case.get("use-test") is False:
            left_out[name] = "disabled in the manifest"
        elif extra:
            left_out[name] = "needs " + ", ".join(extra)
        elif case.get("module") in TERMINOLOGY:
            left_out[name] = "needs a terminology server"
        elif (found := _outcome(repo, commit, case.get("java"))) is None:
            left_out[name] = "no Java outcome recorded"
        elif found[1]:
            left_out[name] = "the Java outcome consulted a terminology server"
        else:
            kept[name] = {"module": case.get("module", ""), "errors": found[0]}
    return kept, left_out


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    repo, commit = argv[1], argv[2]
    kept, left_out = select(repo, commit)
    OUTPUT.mkdir(parents=True, exist_ok=True)
    for name in list(kept):
        content = _show(repo, commit, f"validator/{name}")
        if len(content) > MAX_BYTES:
            left_out[name] = f"larger than {MAX_BYTES // 1024} kB (kept out of the repository)"
            del kept[name]
            continue
        (OUTPUT / name).parent.mkdir(parents=True, exist_ok=True)
        (OUTPUT / name).write_bytes(content)
    (OUTPUT / "LICENSE.txt").write_bytes(_show(repo, commit, "LICENSE.txt"))  # README.md is written by hand
    manifest = {"source": "https://github.com/FHIR/fhir-test-cases", "commit": commit,
                "cases": kept, "leftOut": left_out}
    (OUTPUT / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    print(f"{len(kept)} cases kept, {len(left_out)} R4 JSON cases left out → {OUTPUT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
