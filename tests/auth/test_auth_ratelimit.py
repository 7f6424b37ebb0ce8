"""Rate limits counted once per deployment: across server instances, in the database or in Redis."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest
from auth_helpers import make_client
from conftest import serving
from sqlalchemy import func, select

from fhirfus.auth.ratelimit import DatabaseCounts, ExactLimiter, ReconciledLimiter, RedisCounts, SharedCounts
from fhirfus.db.tables import auth_rate_counts
from fhirfus.settings import Settings
from fhirfus.store.repository import Store

REDIS_URL = os.environ.get("FHIRFUS_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, start: float) -> None:
        self.time = start

    def __call__(self) -> float:
        return self.time


@pytest.fixture
def store(database) -> Store:
    return Store(database.engine)


@pytest.fixture(params=["database", "redis"])
def counts(request: pytest.FixtureRequest, store: Store) -> Iterator[SharedCounts]:
    if request.param == "database":
        yield DatabaseCounts(store)
    else:
        shared = RedisCounts(REDIS_URL, prefix=f"fhirfus-test:{uuid.uuid4().hex}:")
        yield shared
        shared.redis.close()


def _name() -> str:
    """A limit of the test's own: a reconciliation reads every count of its limit."""
    return "test-" + uuid.uuid4().hex[:16]


# --- the arithmetic, on a clock of the test's own ---------------------------------------------------


def test_sliding_minute_weights_the_previous_window(counts) -> None:
    clock = Clock(6_000_000.0)  # the start of a window
    limiter = ReconciledLimiter(counts, _name(), 10, interval=1, now=clock)
    key = "client"
    assert [limiter.retry_after(key) for _ in range(10)] == [0] * 10
    # the end of this window, then 6 s into the next: 10 × (1 - 0.1) + 1 ≤ 10
    assert limiter.retry_after(key) == 60 + 6
    limiter.reconcile()
    clock.time += 90  # half-way into the next window: the ten count for five
    assert [limiter.retry_after(key) for _ in range(5)] == [0] * 5
    # ten before, five now: one more fits when 10 × (1 - f) + 5 + 1 ≤ 10, at f = 0.6, 6 s from now
    assert limiter.retry_after(key) == 6
    clock.time += 6
    assert limiter.retry_after(key) == 0


def test_reconciled_processes_count_for_each_other(counts) -> None:
    clock = Clock(6_000_000.0)
    name = _name()
    first, second = (ReconciledLimiter(counts, name, 10, interval=1, now=clock) for _ in range(2))
    key = "client"
    assert [first.retry_after(key) for _ in range(4)] == [0] * 4
    first.reconcile()
    second.reconcile()
    assert [second.retry_after(key) for _ in range(6)] == [0] * 6
    assert second.retry_after(key) > 0  # 4 + 6: the limit, counted across both
    second.reconcile()
    first.reconcile()
    assert first.retry_after(key) > 0


def test_unreconciled_processes_overshoot_by_what_the_others_admitted_meanwhile(counts) -> None:
    """The stated bound: a process decides on what it last read, so the others' requests since
    then come on top of the limit — and are counted against the client from the next
    reconciliation on."""
    clock = Clock(6_000_000.0)
    name = _name()
    first, second = (ReconciledLimiter(counts, name, 10, interval=1, now=clock) for _ in range(2))
    key = "client"
    first.reconcile()
    second.reconcile()
    admitted = sum(limiter.retry_after(key) == 0 for limiter in (first, second) for _ in range(7))
    assert admitted == 14  # 10 + the 4 the other process admitted unseen (at most 7 each here)
    first.reconcile()
    second.reconcile()
    first.reconcile()
    assert first.retry_after(key) > 0 and second.retry_after(key) > 0


def test_reconciling_sweeps_windows_older_than_the_previous_one(store) -> None:
    clock = Clock(6_000_000.0)
    name = _name()
    limiter = ReconciledLimiter(DatabaseCounts(store), name, 10, interval=1, now=clock)
    limiter.retry_after("client")
    limiter.reconcile()
    clock.time += 180
    limiter.retry_after("client")
    limiter.reconcile()
    with store.reading() as conn:
        windows = conn.execute(select(auth_rate_counts.c.window_start).where(auth_rate_counts.c.name == name)).scalars()
        assert list(windows) == [int(clock.time // 60)]


def test_exact_limiter_takes_refused_requests_back(counts) -> None:
    clock = Clock(6_000_000.0 + 30)  # half-way into a window
    name = _name()
    limiter = ExactLimiter(counts, name, 3, now=clock)
    key = "client"
    assert [limiter.retry_after(key) for _ in range(3)] == [0, 0, 0]
    wait = limiter.retry_after(key)
    assert wait == 30 + 20  # to this window's end, then a third of the next: 3 × (1 - 1/3) + 1 ≤ 3
    assert [limiter.retry_after(key) for _ in range(5)] == [wait] * 5  # refused from memory
    assert counts.add(name, int(clock.time // 60), key, 0) == (3, 0)  # the refused ones were not counted
    clock.time += wait
    assert limiter.retry_after(key) == 0


def test_exact_limiters_share_their_counts(counts) -> None:
    clock = Clock(6_000_000.0)
    name = _name()
    first, second = (ExactLimiter(counts, name, 4, now=clock) for _ in range(2))
    key = "client"
    assert [limiter.retry_after(key) for limiter in (first, second) for _ in range(2)] == [0] * 4
    assert first.retry_after(key) > 0 and second.retry_after(key) > 0


# --- over HTTP: two server instances on one database ---------------------------------------------------


def _reconciled(*apps: object) -> None:
    """Wait until each app's limiter has run a full reconciliation since now."""
    limiters = [app.state.rate_limiter for app in apps]  # type: ignore[attr-defined]
    targets = [limiter.reconciliations + 2 for limiter in limiters]
    deadline = time.monotonic() + 10
    while any(limiter.reconciliations < target for limiter, target in zip(limiters, targets, strict=True)):
        assert time.monotonic() < deadline, "the rate-limit reconciler did not run"
        time.sleep(0.005)


@pytest.mark.parametrize("shared", ["database", "redis"])
def test_fhir_rate_limit_holds_across_two_server_instances(database, store, shared: str) -> None:
    limit = 8
    settings = Settings(database_url=database.url, auth="smart", token_secret="r" * 32, rate_limit_per_minute=limit,
                        rate_limit_sync_ms=20, redis_url=REDIS_URL if shared == "redis" else None)
    with serving(settings, store) as (first, first_app), serving(settings, store) as (second, second_app):
        client = make_client(store, first + "/auth/token", role="admin", scope="system/*.rs")
        headers = {"Authorization": f"Bearer {client.token()}"}
        statuses = []
        for n in range(2 * limit):
            root = (first, second)[n % 2]
            response = httpx.get(root + "/fhir/Patient", params={"_count": 1}, headers=headers, timeout=30)
            statuses.append(response.status_code)
            _reconciled(first_app, second_app)
        # reconciled after every request, the two instances count as one: no overshoot
        assert statuses == [200] * limit + [429] * limit
        assert int(response.headers["Retry-After"]) >= 1


def test_fhir_requests_are_counted_in_the_database(database, store) -> None:
    settings = Settings(database_url=database.url, auth="smart", token_secret="r" * 32, rate_limit_per_minute=100,
                        rate_limit_sync_ms=20)
    with serving(settings, store) as (root, app):
        client = make_client(store, root + "/auth/token", role="admin", scope="system/*.rs")
        with client.http(root + "/fhir") as http:
            assert [http.get("/Patient", params={"_count": 1}).status_code for _ in range(3)] == [200] * 3
        _reconciled(app)
    with store.reading() as conn:
        counted = conn.execute(select(func.sum(auth_rate_counts.c.count))
                               .where(auth_rate_counts.c.name == "fhir", auth_rate_counts.c.key == client.client_id)).scalar()
    assert counted == 3
