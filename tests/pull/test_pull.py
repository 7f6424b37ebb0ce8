"""``fhirfus pull``: a hub pulls two site servers over Bulk Data with SMART Backend Services.

Three real servers: two sites (their own SQLite databases, authentication on, the hub registered
at each as a site client with its key) and the hub (the test database: SQLite and PostgreSQL).
The hub pulls both; a second pull moves only the changes; a deletion at a site reaches the hub;
a pull killed with ``kill -9`` and rerun converges to the exact set; a site's client sees only
its site's data; the same id at two sites stays two resources.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
import orjson
import pytest
from cryptography.hazmat.primitives import serialization
from sqlalchemy import func, select

from fhirfus.db import migrate
from fhirfus.db.engine import make_engine
from fhirfus.db.tables import pull_definitions, resources
from fhirfus.pull import definitions
from fhirfus.pull.client import PullError
from fhirfus.pull.run import PullReport, pull_once
from fhirfus.settings import Settings
from fhirfus.store.repository import Store
from tests.auth_helpers import make_client
from tests.conftest import TEST_DEID_KEY, Database, SecureServer, run_server, serving

HUB_SCOPE = "system/*.rs"


@dataclass
class Site:
    """A site's own fhirfus: its base URL, an admin's HTTP client, and the hub's credentials there."""

    base: str
    admin: httpx.Client
    hub_client_id: str
    hub_key: Path

    def put(self, resources_: list[dict]) -> None:
        bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
            {"resource": r, "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"}} for r in resources_]}
        response = self.admin.post("", json=bundle)
        assert response.status_code == 200, response.text

    def delete(self, reference: str) -> None:
        assert self.admin.delete(f"/{reference}").status_code in (200, 204)


def _label(site: str) -> dict:
    return {"security": [{"system": "https://fhirfus.org/fhir/CodeSystem/site", "code": site}]}


def patient(res_id: str, site: str, family: str) -> dict:
    return {"resourceType": "Patient", "id": res_id, "meta": _label(site), "name": [{"family": family}]}


def observation(res_id: str, site: str, patient_id: str, value: int) -> dict:
    return {"resourceType": "Observation", "id": res_id, "meta": _label(site), "status": "final",
            "code": {"text": "TWSTRS total"}, "subject": {"reference": f"Patient/{patient_id}"},
            "valueQuantity": {"value": value}}


@pytest.fixture
def site_server(tmp_path: Path) -> Iterator[Callable[[str], Site]]:
    """Start a site's server (own database, authentication on) whose data is labelled ``code``."""
    started: list[tuple[object, object, httpx.Client]] = []

    def start(code: str) -> Site:
        folder = tmp_path / f"site-{code}"
        folder.mkdir()
        engine = make_engine(f"sqlite:///{folder / 'site.db'}")
        migrate.upgrade(engine)
        store = Store(engine)
        settings = Settings(database_url=f"sqlite:///{folder / 'site.db'}", auth="smart",
                            token_secret="site-secret-" + uuid.uuid4().hex, deid_key=TEST_DEID_KEY,
                            export_dir=str(folder / "exports"), rate_limit_per_minute=100_000,
                            token_rate_limit_per_minute=100_000, token_rate_limit_per_address=100_000)
        uv, thread, port = run_server(settings, store)
        root = f"http://127.0.0.1:{port}"
        token_url = f"{root}/auth/token"
        admin = make_client(store, token_url, role="admin", scope="system/*.cruds").http(f"{root}/fhir")
        hub = make_client(store, token_url, role="site", scope=HUB_SCOPE, site=code)
        key = folder / "hub-key.pem"
        key.write_bytes(hub.key.private_bytes(  # type: ignore[attr-defined]
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
        started.append((uv, thread, admin))
        return Site(f"{root}/fhir", admin, hub.client_id, key)

    yield start
    for uv, thread, admin in started:
        admin.close()
        uv.should_exit = True  # type: ignore[attr-defined]
        thread.join(timeout=10)  # type: ignore[attr-defined]


@dataclass
class Hub:
    database: Database
    store: Store
    work: Path

    def pull(self, name: str, site: Site, label: str, **options: object) -> PullReport:
        definition = definitions.save(self.store, definitions.Definition(
            name, site.base, site.hub_client_id, str(site.hub_key), label, **options), datetime.now(UTC))  # type: ignore[arg-type]
        return pull_once(self.store, definition, self.work, lambda: datetime.now(UTC), sleep=lambda _: time.sleep(0.05))

    def held(self, label: str) -> dict[str, dict]:
        """What the hub holds for a site label: live resources by ``Type/id`` (Provenance aside)."""
        with self.database.engine.connect() as conn:
            rows = conn.execute(select(resources.c.res_type, resources.c.res_id, resources.c.content).where(
                resources.c.site == label, resources.c.deleted.is_(False),
                resources.c.res_type != "Provenance")).all()
        return {f"{r.res_type}/{r.res_id}": r.content if isinstance(r.content, dict) else orjson.loads(r.content)
                for r in rows}

    def provenances(self, label: str) -> int:
        with self.database.engine.connect() as conn:
            return conn.execute(select(func.count()).select_from(resources).where(
                resources.c.site == label, resources.c.res_type == "Provenance")).scalar_one()


@pytest.fixture
def hub(database: Database, tmp_path: Path) -> Hub:
    return Hub(database, Store(database.engine), tmp_path / "pulls")


def test_the_hub_pulls_two_sites_keeping_their_equal_ids_apart(
    site_server: Callable[[str], Site], hub: Hub, unique: str,
) -> None:
    a, b = f"a{unique}", f"b{unique}"
    site_a, site_b = site_server(a), site_server(b)
    site_a.put([patient("1", a, "Alpha"), observation("o1", a, "1", 30)])
    site_b.put([patient("1", b, "Beta"), observation("o1", b, "1", 12), observation("o2", b, "1", 14)])

    first_a = hub.pull(f"pull-{a}", site_a, a)
    first_b = hub.pull(f"pull-{b}", site_b, b)

    assert (first_a.written, first_b.written) == (2, 3)
    held_a, held_b = hub.held(a), hub.held(b)
    assert set(held_a) == {f"Patient/{a}-1", f"Observation/{a}-o1"}
    assert set(held_b) == {f"Patient/{b}-1", f"Observation/{b}-o1", f"Observation/{b}-o2"}
    assert held_a[f"Patient/{a}-1"]["name"] == [{"family": "Alpha"}]
    assert held_b[f"Patient/{b}-1"]["name"] == [{"family": "Beta"}]
    assert held_b[f"Observation/{b}-o2"]["subject"] == {"reference": f"Patient/{b}-1"}  # references follow the ids
    assert hub.provenances(a) == hub.provenances(b) == 1
    assert all(f["sha256"] and len(f["sha256"]) == 64 for f in first_a.files)


def test_a_second_pull_moves_only_the_changes_and_deletions_reach_the_hub(
    site_server: Callable[[str], Site], hub: Hub, unique: str,
) -> None:
    a = f"a{unique}"
    site = site_server(a)
    site.put([patient("p", a, "Before"), *(observation(f"o{n}", a, "p", n) for n in range(5))])
    assert hub.pull(f"pull-{a}", site, a).written == 6

    site.put([patient("p", a, "After"), observation("new", a, "p", 99)])
    site.delete("Observation/o3")
    second = hub.pull(f"pull-{a}", site, a)

    assert (second.written, second.deleted) == (2, 1)
    held = hub.held(a)
    assert held[f"Patient/{a}-p"]["name"] == [{"family": "After"}]
    assert set(held) == {f"Patient/{a}-p", f"Observation/{a}-new", *(f"Observation/{a}-o{n}" for n in (0, 1, 2, 4))}
    quiet = hub.pull(f"pull-{a}", site, a)
    assert (quiet.written, quiet.deleted) == (0, 0)
    assert hub.provenances(a) == 3  # one per pull
    with hub.database.engine.connect() as conn:
        stored = conn.execute(select(pull_definitions).where(pull_definitions.c.name == f"pull-{a}")).one()
    assert stored.status == "ok" and stored.since == quiet.transaction_time and stored.job_url is None


def test_a_site_client_pulls_only_its_own_sites_data(site_server: Callable[[str], Site], hub: Hub, unique: str) -> None:
    a, other = f"a{unique}", f"x{unique}"
    site = site_server(a)
    site.put([patient("mine", a, "Mine"), patient("theirs", other, "Theirs"),
              observation("theirs-obs", other, "theirs", 1)])
    hub.pull(f"pull-{a}", site, a)
    assert set(hub.held(a)) == {f"Patient/{a}-mine"}
    assert hub.held(other) == {}


def test_a_group_pull_brings_only_the_groups_patients(site_server: Callable[[str], Site], hub: Hub, unique: str) -> None:
    a = f"a{unique}"
    site = site_server(a)
    site.put([patient("in", a, "In"), patient("out", a, "Out"), observation("in-obs", a, "in", 1),
              observation("out-obs", a, "out", 2),
              {"resourceType": "Group", "id": "cohort", "meta": _label(a), "type": "person", "actual": True,
               "member": [{"entity": {"reference": "Patient/in"}}]}])
    hub.pull(f"pull-{a}", site, a, group_id="cohort")
    assert set(hub.held(a)) == {f"Patient/{a}-in", f"Observation/{a}-in-obs", f"Group/{a}-cohort"}  # a member's compartment holds its Group


def test_a_patient_level_pull_leaves_what_no_patient_owns(
    site_server: Callable[[str], Site], hub: Hub, unique: str,
) -> None:
    a = f"a{unique}"
    site = site_server(a)
    site.put([patient("p", a, "P"), observation("p-obs", a, "p", 1),
              {"resourceType": "Organization", "id": "clinic", "meta": _label(a), "name": "Clinic"}])
    hub.pull(f"pull-{a}", site, a, patient_level=True)
    assert set(hub.held(a)) == {f"Patient/{a}-p", f"Observation/{a}-p-obs"}
    assert definitions.get(hub.store, f"pull-{a}").level == "patient"


def test_credentials_of_one_site_are_refused_by_another_and_nothing_is_written(
    site_server: Callable[[str], Site], hub: Hub, unique: str,
) -> None:
    a, b = f"a{unique}", f"b{unique}"
    site_a, site_b = site_server(a), site_server(b)
    site_b.put([patient("1", b, "Beta")])
    stolen = Site(site_b.base, site_b.admin, site_a.hub_client_id, site_a.hub_key)
    with pytest.raises(PullError, match="token endpoint"):
        hub.pull(f"pull-{b}", stolen, b)
    assert hub.held(b) == {}
    [row] = [d for d in definitions.all_definitions(hub.store) if d.name == f"pull-{b}"]
    assert row.status == "failed" and "refused the client" in (row.last_error or "")


def _cli(hub: Hub, *args: str) -> subprocess.Popen:
    env = {**os.environ, "FHIRFUS_DATABASE_URL": hub.database.url, "FHIRFUS_PULL_DIR": str(hub.work)}
    return subprocess.Popen([sys.executable, "-m", "fhirfus.cli", "pull", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def test_a_pull_killed_mid_load_and_rerun_converges_to_the_exact_set(
    site_server: Callable[[str], Site], hub: Hub, unique: str,
) -> None:
    a = f"a{unique}"
    site = site_server(a)
    site.put([patient("p", a, "Many")])
    total = 4000
    for start in range(0, total, 500):
        site.put([observation(f"o{n}", a, "p", n) for n in range(start, start + 500)])
    site.delete("Observation/o7")
    args = ("--from", site.base, "--client-id", site.hub_client_id, "--key", str(site.hub_key), "--site", a,
            "--name", f"pull-{a}")

    process = _cli(hub, *args)
    deadline = time.monotonic() + 120
    while not hub.held(a) and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    partial = len(hub.held(a))
    assert 0 < partial < total, "the pull was meant to be killed while it loaded"
    assert definitions.get(hub.store, f"pull-{a}").since is None  # the watermark did not move

    rerun = _cli(hub, *args)
    output, _ = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, output.decode()
    assert "(resumed)" in output.decode()  # the same export, picked up again

    expected = {f"Patient/{a}-p", *(f"Observation/{a}-o{n}" for n in range(total) if n != 7)}
    held = hub.held(a)
    assert set(held) == expected
    assert all(held[f"Observation/{a}-o{n}"]["valueQuantity"]["value"] == n for n in (0, 1999, total - 1))
    assert hub.provenances(a) == 1


def test_pull_list_shows_status_and_errors(site_server: Callable[[str], Site], hub: Hub, unique: str) -> None:
    a = f"a{unique}"
    site = site_server(a)
    broken = Site(site.base, site.admin, "not-a-client", site.hub_key)
    with pytest.raises(PullError):
        hub.pull(f"pull-{a}", broken, a)
    listing = _cli(hub, "list", "--json")
    output, _ = listing.communicate(timeout=120)
    assert listing.returncode == 0, output
    start = output.index(b"[")
    [shown] = [d for d in orjson.loads(output[start:]) if d["name"] == f"pull-{a}"]
    assert shown["status"] == "failed" and "refused the client" in shown["last_error"]
    assert shown["source"] == site.base and shown["site"] == a and shown["since"] is None


def test_the_hub_server_runs_stored_definitions_on_their_schedule(
    site_server: Callable[[str], Site], hub: Hub, unique: str,
) -> None:
    a = f"a{unique}"
    site = site_server(a)
    site.put([patient("p", a, "Scheduled")])
    definitions.save(hub.store, definitions.Definition(
        f"pull-{a}", site.base, site.hub_client_id, str(site.hub_key), a, every_seconds=1), datetime.now(UTC))
    settings = Settings(database_url=hub.database.url, auth="off", pull_schedule_seconds=1, pull_dir=str(hub.work))
    with serving(settings, hub.store):
        assert _eventually(lambda: f"Patient/{a}-p" in hub.held(a))
        site.put([observation("later", a, "p", 5)])
        assert _eventually(lambda: f"Observation/{a}-later" in hub.held(a))  # the next round is incremental
    assert definitions.get(hub.store, f"pull-{a}").status == "ok"


def test_a_due_definition_is_claimed_by_one_scheduler_only(hub: Hub, unique: str, tmp_path: Path) -> None:
    saved = definitions.save(hub.store, definitions.Definition(
        f"pull-c{unique}", "http://127.0.0.1:9/fhir", "client", str(tmp_path / "key.pem"), f"c{unique}",
        every_seconds=3600), datetime.now(UTC))
    assert saved in definitions.due(hub.store, datetime.now(UTC))
    assert definitions.claim(hub.store, saved, datetime.now(UTC))
    assert not definitions.claim(hub.store, saved, datetime.now(UTC))  # the other process saw the same row
    assert saved.name not in {d.name for d in definitions.due(hub.store, datetime.now(UTC))}


def _eventually(check: Callable[[], bool], seconds: float = 60) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.1)
    return False


def test_admins_see_pull_status_and_errors_over_http_and_nobody_else_does(
    secure_server: SecureServer, hub: Hub, unique: str, tmp_path: Path,
) -> None:
    name = f"pull-e{unique}"
    saved = definitions.save(hub.store, definitions.Definition(
        name, "http://127.0.0.1:9/fhir", "client", str(tmp_path / "missing.pem"), f"e{unique}"), datetime.now(UTC))
    with pytest.raises(PullError):
        pull_once(hub.store, saved, hub.work, lambda: datetime.now(UTC))
    token_url = f"{secure_server.root}/auth/token"
    admin = make_client(hub.store, token_url, role="admin", scope="system/*.rs")
    site = make_client(hub.store, token_url, role="site", scope="system/*.rs", site=f"e{unique}")
    with admin.http(secure_server.base) as http:
        answer = http.get("/_pulls")
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("application/json")
    [shown] = [p for p in answer.json()["pulls"] if p["name"] == name]
    assert shown["status"] == "failed" and "missing.pem" in shown["last_error"] and shown["level"] == "system"
    with site.http(secure_server.base) as http:
        refused = http.get("/_pulls")
    assert refused.status_code == 403 and refused.json()["resourceType"] == "OperationOutcome"
    assert httpx.get(f"{secure_server.base}/_pulls").status_code == 401


def test_pull_every_loops_printing_a_line_per_run(site_server: Callable[[str], Site], hub: Hub, unique: str) -> None:
    a = f"a{unique}"
    site = site_server(a)
    site.put([patient("p", a, "Looped")])
    process = _cli(hub, "--from", site.base, "--client-id", site.hub_client_id, "--key", str(site.hub_key),
                   "--site", a, "--every", "1s")
    lines: list[str] = []
    try:
        assert process.stdout is not None
        while len([line for line in lines if line.startswith(f"{a}: ")]) < 2:
            line = process.stdout.readline().decode()
            assert line, "fhirfus pull --every stopped:\n" + "".join(lines)
            lines.append(line)
    finally:
        process.terminate()
        process.wait(timeout=30)
    runs = [line for line in lines if line.startswith(f"{a}: ")]  # stdout's report lines (progress: stderr)
    assert runs[0].startswith(f"{a}: 1 written") and runs[1].startswith(f"{a}: 0 written")  # the second: incremental
    assert definitions.get(hub.store, a).every_seconds == 1
