"""The operator's path (README "An operator", ``docker-compose.yml``, ``Dockerfile``) as far as a
machine without a Docker engine allows: both files are read as Compose and Docker read them, and
their commands run here in subprocesses: the server's command (migrations, then serving) with the
service's environment against the local PostgreSQL standing in for the ``db`` service, the service's
health check against it, and the README's ``docker compose exec`` commands. What stays unverified
is the image build itself (``pip install`` inside ``python:3.11-slim``) and the container network."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import httpx
import pytest
import yaml
from sqlalchemy.engine import make_url

from fhirfus.testing import free_port, scratch_postgres

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
SECRETS = {"FHIRFUS_DB_PASSWORD": "compose-db-password", "FHIRFUS_TOKEN_SECRET": "t" * 40,
           "FHIRFUS_DEID_KEY": "compose-deid-key-0123456789"}


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined, comments left out."""
    text = re.sub(r"\\\n", " ", (REPO / "Dockerfile").read_text(encoding="utf-8"))
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1].strip()) for line in lines]


def instruction(name: str) -> list[str]:
    return [arguments for found, arguments in dockerfile() if found == name]


def exec_form(arguments: str) -> list[str]:
    """A CMD in exec form (JSON) as it is, in shell form as Docker runs it."""
    return json.loads(arguments) if arguments.startswith("[") else ["/bin/sh", "-c", arguments]


_VARIABLE = re.compile(r"\$\{(\w+)(?:(:?[?-])([^}]*))?\}")


class MissingVariable(Exception):
    pass


def interpolate(value: str, environ: Mapping[str, str]) -> str:
    """Compose's substitution: ``${VAR}``, ``${VAR:-default}``/``${VAR-default}``,
    ``${VAR:?error}``/``${VAR?error}`` (the colon forms treat an empty value as unset)."""

    def one(match: re.Match[str]) -> str:
        name, operator, argument = match.groups()
        value = environ.get(name)
        unset = value is None or (operator is not None and operator.startswith(":") and value == "")
        if operator and operator.endswith("?") and unset:
            raise MissingVariable(f"required variable {name} is missing a value: {argument}")
        if operator and operator.endswith("-") and unset:
            return argument
        return value or ""

    return _VARIABLE.sub(one, value)


def compose() -> dict:
    return yaml.safe_load((REPO / "docker-compose.yml").read_text(encoding="utf-8"))


def service_environment(service: str, environ: Mapping[str, str]) -> dict[str, str]:
    found = compose()["services"][service].get("environment") or {}
    if isinstance(found, list):
        found = dict(item.split("=", 1) for item in found)
    return {name: interpolate(str(value), environ) for name, value in found.items()}


def operator_commands() -> list[str]:
    """The commands the README's operator runs inside the container (``docker compose exec fhirfus …``)."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    block = re.search(r"\*\*An operator\*\*.*?```sh\n(.*?)```", readme, re.S)
    assert block, "the README's operator path is gone"
    return [line.split("#", 1)[0].strip().removeprefix("docker compose exec fhirfus ")
            for line in block.group(1).splitlines() if line.startswith("docker compose exec fhirfus ")]


def test_the_image_copies_what_exists_on_the_python_the_package_needs_and_serves_the_published_port() -> None:
    assert compose()["services"]["fhirfus"]["build"] == "."
    for arguments in instruction("COPY"):
        *sources, _target = arguments.split()
        for source in sources:
            assert (REPO / source).exists(), f"COPY {source}: not in the build context"
    [base] = instruction("FROM")
    version = re.search(r"python:(\d+)\.(\d+)", base)
    required = re.search(r'requires-python = ">=(\d+)\.(\d+)"', (REPO / "pyproject.toml").read_text(encoding="utf-8"))
    assert version and required and tuple(map(int, version.groups())) >= tuple(map(int, required.groups()))
    assert any(re.fullmatch(r"pip install( --no-cache-dir)? \.", run) for run in instruction("RUN"))
    command = exec_form(instruction("CMD")[-1])
    port = command[command.index("--port") + 1]
    assert instruction("EXPOSE") == [port]
    assert [p.split(":")[-1] for p in compose()["services"]["fhirfus"]["ports"]] == [port]


def test_compose_refuses_to_start_without_each_secret_and_points_the_server_at_the_db_service() -> None:
    for secret in SECRETS:
        with pytest.raises(MissingVariable, match=f"set {secret}"):
            service_environment("fhirfus", {k: v for k, v in SECRETS.items() if k != secret})
    server = service_environment("fhirfus", SECRETS)
    database = service_environment("db", SECRETS)
    url = make_url(server["FHIRFUS_DATABASE_URL"])
    assert (url.host, url.port) == ("db", 5432) and "db" in compose()["services"]
    assert (url.username, url.password, url.database) == (
        database["POSTGRES_USER"], database["POSTGRES_PASSWORD"], database["POSTGRES_DB"])
    assert server["FHIRFUS_AUTH"] == "smart"


@pytest.fixture
def local_db_service() -> Iterator[str]:
    """An empty database on the local PostgreSQL, standing in for the ``db`` service's."""
    with scratch_postgres(prefix="fhirfus_compose") as (url,):
        yield url


def test_the_services_commands_migrate_serve_and_pass_the_health_check(local_db_service: str, tmp_path: Path) -> None:
    service = compose()["services"]["fhirfus"]
    environment = service_environment("fhirfus", SECRETS)
    environment["FHIRFUS_DATABASE_URL"] = local_db_service  # the db service is the local PostgreSQL here
    environment["FHIRFUS_EXPORT_DIR"] = str(tmp_path / "exports")  # the exports volume
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("FHIRFUS_")}, **environment,
           "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    command = service.get("command") or exec_form(instruction("CMD")[-1])
    published = command[command.index("--port") + 1]
    port = str(free_port())
    # the same command on a free loopback port: this machine is shared, its 8000 may be taken
    command = [port if arg == published else "127.0.0.1" if arg == "0.0.0.0" else arg for arg in command]
    before = subprocess.run(["fhirfus", "db", "current"], env=env, cwd=tmp_path, capture_output=True, text=True,
                            timeout=120)
    assert before.stdout.strip() == "base"  # an empty database: the server's command must migrate it

    log = (tmp_path / "serve.log").open("w")
    server = subprocess.Popen(command, env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT)
    try:
        check = service["healthcheck"]
        assert check["test"][0] == "CMD"
        probe = [sys.executable if arg == "python" else arg.replace(f":{published}/", f":{port}/")
                 for arg in check["test"][1:]]
        deadline = time.monotonic() + _seconds(check.get("start_period", "0s")) + \
            check.get("retries", 3) * _seconds(check.get("interval", "30s"))
        healthy = False
        while not healthy and time.monotonic() < deadline and server.poll() is None:
            healthy = subprocess.run(probe, env=env, capture_output=True, timeout=_seconds(check["timeout"]) + 5
                                     ).returncode == 0
            if not healthy:
                time.sleep(0.5)
        assert healthy, (tmp_path / "serve.log").read_text()[-3000:]

        root = f"http://127.0.0.1:{port}"
        assert httpx.get(f"{root}/fhir/Patient").status_code == 401  # authentication is on
        assert httpx.get(f"{root}/app/login").status_code == 200  # and the console is served
        after = subprocess.run(["fhirfus", "db", "current"], env=env, cwd=tmp_path, capture_output=True, text=True,
                               timeout=120)
        assert after.returncode == 0 and after.stdout.strip() not in ("", "base"), after.stderr
        assert "database: postgresql" in (tmp_path / "serve.log").read_text()

        commands = operator_commands()
        assert commands, "the README's operator runs no command in the container"
        for line in commands:
            done = subprocess.run(line.split(), env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
            assert done.returncode == 0 and "Usage" in done.stdout, f"{line}\n{done.stdout}\n{done.stderr}"
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()


def _seconds(duration: str | int) -> float:
    """A Compose duration (``10s``, ``1m30s``) in seconds."""
    if isinstance(duration, int | float):
        return float(duration)
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    return sum(float(n) * units[u] for n, u in re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", duration))
