"""An installed wheel serves on its own: the guide, the migrations and the generated data travel inside
the package, so ``fhirfus`` works from any directory without the source tree."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel of this tree, unpacked where ``PYTHONPATH`` puts it ahead of the editable install."""
    dist = tmp_path_factory.mktemp("dist")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist),
                    str(ROOT)], check=True, capture_output=True)
    target = tmp_path_factory.mktemp("site")
    (wheel,) = dist.glob("fhirfus-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(target)
    return target


def _fhirfus(installed: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(installed), "FHIRFUS_DATABASE_URL": f"sqlite:///{cwd / 'fhirfus.db'}",
           "FHIRFUS_AUTH": "off"}
    code = "import sys; from fhirfus.cli import app; sys.argv[0] = 'fhirfus'; app()"
    return subprocess.run([sys.executable, "-c", code, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)


def test_the_wheel_holds_the_guide_the_migrations_and_the_generated_data(installed: Path) -> None:
    package = installed / "fhirfus"
    assert (package / "ig" / "questionnaires" / "twstrs-1994.json").is_file()
    assert (package / "ig" / "inbound" / "site-registry.yaml").is_file()
    assert (package / "db" / "migrations" / "env.py").is_file()
    assert len(list((package / "db" / "migrations" / "versions").glob("0*.py"))) >= 12
    assert (package / "fhir" / "data" / "search_parameters.json").is_file()


def test_an_installed_fhirfus_migrates_and_loads_the_demo_from_any_directory(installed: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    where = subprocess.run([sys.executable, "-c", "import fhirfus; print(fhirfus.__file__)"], cwd=elsewhere,
                           env={**os.environ, "PYTHONPATH": str(installed)}, capture_output=True, text=True)
    assert where.stdout.strip().startswith(str(installed)), where.stdout
    upgraded = _fhirfus(installed, elsewhere, "db", "upgrade")
    assert upgraded.returncode == 0, upgraded.stderr
    demo = _fhirfus(installed, elsewhere, "demo")
    assert demo.returncode == 0, demo.stdout + demo.stderr
    assert "60 patients" in demo.stdout + demo.stderr
