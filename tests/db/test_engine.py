"""``db.engine.libpq_address``: the connections made outside SQLAlchemy (the async read pool, the
subscriptions' LISTEN) reach the database the engine reaches, with the URL's own options."""

from __future__ import annotations

from psycopg.conninfo import conninfo_to_dict

from fhirfus.db.engine import libpq_address, make_engine


def test_the_urls_options_are_kept_and_the_statement_limit_added_after_them() -> None:
    engine = make_engine("postgresql://u@127.0.0.1:5432/test?options=-csearch_path%3Dfhirfus&host=a&host=b")
    address = conninfo_to_dict(libpq_address(engine, application_name="x", statement_timeout_ms=100) or "")
    assert address["options"] == "-csearch_path=fhirfus -c statement_timeout=100"
    assert address["host"] == "a,b" and address["dbname"] == "test" and address["client_encoding"] == "UTF8"
    assert address["application_name"] == "x"


def test_without_options_in_the_url_only_the_limit_and_none_without_a_limit() -> None:
    engine = make_engine("postgresql://u@127.0.0.1:5432/test?application_name=mine")
    assert conninfo_to_dict(libpq_address(engine, application_name="x", statement_timeout_ms=5) or "")["options"] \
        == "-c statement_timeout=5"
    plain = conninfo_to_dict(libpq_address(engine, application_name="x") or "")
    assert "options" not in plain and plain["application_name"] == "mine"  # the URL's name wins


def test_sqlite_has_no_libpq_address(tmp_path) -> None:
    assert libpq_address(make_engine(f"sqlite:///{tmp_path}/x.db"), application_name="x") is None
