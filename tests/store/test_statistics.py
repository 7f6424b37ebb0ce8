"""Search stays fast right after data arrives through the API: the server refreshes PostgreSQL's
planner statistics itself once its writes have outgrown them (``store/statistics.py``), instead of
waiting for autovacuum. Autovacuum is switched off on the test database's tables, so only the server
can have analysed them."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest
from sqlalchemy import Engine, text

from fhirfus.db import migrate
from fhirfus.db.engine import make_engine
from fhirfus.settings import Settings
from fhirfus.store import repository
from fhirfus.store.repository import Store
from fhirfus.store.statistics import OBSERVER, STATISTICS_TABLES, StatisticsKeeper
from fhirfus.testing import scratch_postgres
from tests.conftest import serving

CODES = 10  # Observation codes; each matches a tenth of the Observations


@pytest.fixture
def postgres() -> Iterator[Engine]:
    with scratch_postgres() as (url,):
        engine = make_engine(url)
        migrate.upgrade(engine)
        with engine.begin() as conn:
            for table in STATISTICS_TABLES:
                conn.exec_driver_sql(f'ALTER TABLE "{table}" SET (autovacuum_enabled = false)')
        try:
            yield engine
        finally:
            engine.dispose()


def _load(base: str, observations: int) -> None:
    """Patients and Observations through transaction Bundles, as an EHR interface sends them."""
    with httpx.Client(base_url=base, timeout=60) as client:
        for start in range(0, observations, 100):
            entries = [{"resource": {"resourceType": "Patient", "id": f"p{start}"},
                        "request": {"method": "PUT", "url": f"Patient/p{start}"}}]
            entries += [{"resource": {"resourceType": "Observation", "status": "final",
                                      "code": {"coding": [{"system": "http://loinc.org", "code": f"code-{n % CODES}"}]},
                                      "subject": {"reference": f"Patient/p{start}"}},
                         "request": {"method": "POST", "url": "Observation"}} for n in range(start, start + 100)]
            answer = client.post("/fhir", json={"resourceType": "Bundle", "type": "transaction", "entry": entries})
            assert answer.status_code == 200, answer.text


def _analysed(engine: Engine) -> set[str]:
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT relname FROM pg_stat_user_tables WHERE last_analyze IS NOT NULL")).all()
    return {row.relname for row in rows}


def _estimated_code_rows(engine: Engine) -> float:
    """The planner's estimate of the index rows of one Observation code (the truth: a tenth of them)."""
    with engine.connect() as conn:
        plan = conn.execute(text(
            "EXPLAIN (FORMAT JSON) SELECT resource_pk FROM search_token "
            "WHERE res_type = 'Observation' AND param = 'code' AND code = 'code-3'")).scalar_one()
    return float(plan[0]["Plan"]["Plan Rows"])


def _keeper(store: Store) -> StatisticsKeeper:
    keeper = store.observer(OBSERVER)
    assert isinstance(keeper, StatisticsKeeper), "the server made the keeper one of the store's write observers"
    return keeper


def _wait_for(condition, seconds: float) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return condition()


def test_statistics_are_refreshed_after_a_load_through_transactions(postgres: Engine) -> None:
    settings = Settings(database_url=str(postgres.url), auth="off", analyze_after=500)
    store = Store(postgres)
    with serving(settings, store) as (base, _app):
        _load(base, 2000)
        # 2,000 Observations, 200 per code: the estimate comes to that order (the planner multiplies the
        # columns' frequencies as if independent, so below it), not the 1 row of empty statistics, nor
        # the figure of a refresh taken part-way through the load
        assert _wait_for(lambda: 75 <= _estimated_code_rows(postgres) <= 400, 15), _estimated_code_rows(postgres)
        assert {"resources", "search_token"} <= _analysed(postgres)
        assert _keeper(store).runs >= 1


def test_without_the_setting_nothing_is_analysed(postgres: Engine) -> None:
    """The control: the same load with the refresh off leaves the statistics as they were."""
    settings = Settings(database_url=str(postgres.url), auth="off", analyze_after=0)
    with serving(settings, Store(postgres)) as (base, _app):
        _load(base, 2000)
        time.sleep(3)
    assert not {"resources", "search_token"} & _analysed(postgres)
    assert _estimated_code_rows(postgres) < 10  # what misled the planner: a code taken for a single row


def test_small_writes_do_not_trigger_an_analyze(postgres: Engine) -> None:
    settings = Settings(database_url=str(postgres.url), auth="off", analyze_after=500)
    store = Store(postgres)
    with serving(settings, store) as (base, _app):
        _load(base, 300)  # 303 resource versions: under the threshold
        time.sleep(3)
        assert _keeper(store).runs == 0
    assert "search_token" not in _analysed(postgres)


def test_a_refused_look_at_the_statistics_never_holds_up_the_start() -> None:
    """The keeper's first look at the planner's estimate happens in its own thread: a database that
    refuses it (here: nothing listens on the port; in CI it was a 1 ms statement time limit) costs a
    warning, never the server's start."""
    from fhirfus.testing import free_port

    engine = make_engine(f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/none?connect_timeout=1")
    keeper = StatisticsKeeper(engine, STATISTICS_TABLES, min_rows=1, fraction=0.2, min_interval=0,
                              clock=time.monotonic)
    started = time.monotonic()
    keeper.start()
    assert time.monotonic() - started < 0.5
    keeper.wrote(10)  # the refresh it triggers fails too, and is only logged
    keeper.stop()
    assert keeper.runs == 0


def test_the_keeper_counts_the_versions_of_committed_writes_only(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """As a write observer the keeper hears of a transaction after its commit: a rolled-back write
    made no statistics stale."""
    engine = make_engine(f"sqlite:///{tmp_path / 'counted.db'}")
    migrate.upgrade(engine)
    store = Store(engine)
    keeper = StatisticsKeeper(engine, STATISTICS_TABLES, min_rows=1000, fraction=0.2, min_interval=0,
                              clock=time.monotonic)
    store.observe(OBSERVER, keeper)
    with store.writing() as conn:
        repository.create(conn, "Patient", "counted-1", {"resourceType": "Patient"})
        repository.create(conn, "Patient", "counted-2", {"resourceType": "Patient"})
    with pytest.raises(RuntimeError), store.writing() as conn:
        repository.create(conn, "Patient", "rolled-back", {"resourceType": "Patient"})
        raise RuntimeError("the request fails after the insert")
    assert keeper.pending == 2
    engine.dispose()
