"""The schema (SQLAlchemy Core). Alembic migrations in ``migrations/`` create exactly this.

- ``resources``: the current version of every resource (deleted ones keep a tombstone row so
  that a read answers 410 and version numbers continue after a re-create).
- ``resource_history``: every version, including deletes (``content`` is NULL for those).
- ``site`` on both: the site that owns the id (its ``meta.security`` site label), set when the id
  is first written and never changed, tombstones included; NULL for data of no site. Every read
  filters on it through ``fhirfus.db.visibility``.
- ``search_*``: one table per search-parameter type, filled from the SearchParameter
  expressions when a resource is written, in the same transaction (``fhirfus.search.index``).
  Each row points at ``resources.pk`` and carries ``res_type`` and ``param`` so every lookup
  starts with an index range on (res_type, param, value).
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Numeric,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)

from fhirfus.db.types import JsonDocument, UTCDateTime

metadata = MetaData()

#: Surrogate keys: BIGINT on PostgreSQL, the rowid alias INTEGER on SQLite.
SurrogateKey = BigInteger().with_variant(Integer(), "sqlite")

resources = Table(
    "resources",
    metadata,
    Column("pk", SurrogateKey, primary_key=True, autoincrement=True),
    Column("res_type", String(64), nullable=False),
    Column("res_id", String(64), nullable=False),
    Column("version", Integer, nullable=False),
    Column("last_updated", UTCDateTime, nullable=False),
    Column("deleted", Boolean, nullable=False, default=False),
    Column("content", JsonDocument, nullable=True),
    Column("site", String(64), nullable=True),
    UniqueConstraint("res_type", "res_id", name="uq_resources_type_id"),
    Index("ix_resources_type_updated", "res_type", "last_updated"),
)

resource_history = Table(
    "resource_history",
    metadata,
    Column("res_type", String(64), primary_key=True),
    Column("res_id", String(64), primary_key=True),
    Column("version", Integer, primary_key=True),
    Column("last_updated", UTCDateTime, nullable=False),
    Column("method", String(8), nullable=False),
    Column("content", JsonDocument, nullable=True),
    Column("site", String(64), nullable=True),
    Index("ix_history_updated", "last_updated"),
    Index("ix_history_type_updated", "res_type", "last_updated"),
)


def _index_table(name: str, *columns: Column, indexes: tuple[Index, ...] = ()) -> Table:
    """A search-index table: (resource_pk, res_type, param, value columns…).

    ``resource_pk`` deliberately has no foreign key: index rows are written and deleted only by the
    indexer in the transaction that writes their resource, and ``resources`` rows are never deleted
    (deletes are tombstones). The FK check cost ~30 % of bulk ingest (measured with
    bench/search.py) and protected against nothing the code can do.

    The string lookup ends with ``resource_pk``: what a search takes from it is that key, so
    counting a name prefix's matches and picking a page's keys read the B-tree alone (an
    index-only scan, half the PostgreSQL CPU of ``Patient?family=prefix``) instead of a table row
    per match. The other lookups do not: their keys repeat (``status=final`` on every
    Observation), PostgreSQL stores a repeated key once with its row pointers, and a unique
    trailing key undoes that (the token B-tree grew fifteenfold).
    """
    return Table(
        name,
        metadata,
        Column("resource_pk", SurrogateKey, nullable=False),
        Column("res_type", String(64), nullable=False),
        Column("param", String(100), nullable=False),
        *columns,
        Index(f"ix_{name}_resource", "resource_pk"),
        *indexes,
    )


search_token = _index_table(
    "search_token",
    Column("system", Text, nullable=True),
    Column("code", Text, nullable=True),
    Column("text", Text, nullable=True),
    indexes=(Index("ix_search_token_code", "res_type", "param", "code", "system"),),
)

search_string = _index_table(
    "search_string",
    Column("value", Text, nullable=False),
    Column("exact", Text, nullable=False),
    indexes=(
        Index(
            "ix_search_string_value", "res_type", "param", "value", "resource_pk",
            postgresql_ops={"value": "text_pattern_ops"},
        ),
    ),
)

search_date = _index_table(
    "search_date",
    Column("low", UTCDateTime, nullable=False),
    Column("high", UTCDateTime, nullable=False),
    indexes=(
        Index("ix_search_date_range", "res_type", "param", "low", "high"),
        Index("ix_search_date_high", "res_type", "param", "high"),
    ),
)

search_reference = _index_table(
    "search_reference",
    Column("target_type", String(64), nullable=True),
    Column("target_id", String(64), nullable=True),
    Column("url", Text, nullable=False),
    # One B-tree serves both directions, led by the target id: a search by reference
    # (``subject=Patient/1``: id, type, the searching type and parameter) and a reverse lookup
    # (``_revinclude``, compartments, ``$everything``: id and type). Two B-trees keyed by random ids
    # cost 7.6 µs per inserted row on PostgreSQL 15, this one 4.8 (1,000,000 rows already there).
    # References without a target id (canonicals, ``urn:``) are searched by URL: a partial B-tree
    # holds just those.
    indexes=(
        Index("ix_search_reference_by_target", "target_id", "target_type", "res_type", "param"),
        Index("ix_search_reference_url", "res_type", "param", "url",
              postgresql_where=text("target_id IS NULL"), sqlite_where=text("target_id IS NULL")),
    ),
)

search_number = _index_table(
    "search_number",
    Column("value", Numeric, nullable=False),
    indexes=(Index("ix_search_number_value", "res_type", "param", "value"),),
)

search_quantity = _index_table(
    "search_quantity",
    Column("value", Numeric, nullable=False),
    Column("system", Text, nullable=True),
    Column("code", Text, nullable=True),
    indexes=(Index("ix_search_quantity_value", "res_type", "param", "value"),),
)

search_uri = _index_table(
    "search_uri",
    Column("value", Text, nullable=False),
    indexes=(
        Index("ix_search_uri_value", "res_type", "param", "value", postgresql_ops={"value": "text_pattern_ops"}),
    ),
)

#: Composite parameters (``code-value-quantity``, ``component-code-value-concept`` …). R4's composites
#: start with a token (or, once, a reference), then a token, quantity, number, date or string;
#: MolecularSequence's have a third, numeric component. One row per combination of component values
#: taken from the *same* element, so a blood pressure's systolic code is never paired with its
#: diastolic value (what joining two separate index rows would do).
search_composite = _index_table(
    "search_composite",
    Column("system1", Text, nullable=True),
    Column("code1", Text, nullable=True),
    Column("system2", Text, nullable=True),
    Column("code2", Text, nullable=True),
    Column("number2", Numeric, nullable=True),
    Column("low2", UTCDateTime, nullable=True),
    Column("high2", UTCDateTime, nullable=True),
    Column("text2", Text, nullable=True),
    Column("number3", Numeric, nullable=True),
    indexes=(Index("ix_search_composite_first", "res_type", "param", "code1", "system1"),),
)

INDEX_TABLES = (
    search_token, search_string, search_date, search_reference, search_number, search_quantity, search_uri,
    search_composite,
)
#: What a search reads, by name (for statistics upkeep): the current resources first, then the index.
SEARCHED_TABLE_NAMES = (resources.name, *(table.name for table in INDEX_TABLES))

#: ``fhirfus load`` progress: a chunk is recorded in the transaction that stores it, so a rerun
#: after an interruption skips exactly the chunks that are already in.
load_journal = Table(
    "load_journal",
    metadata,
    Column("source", String(64), primary_key=True),
    Column("chunk", Integer, primary_key=True),
    Column("resources", Integer, nullable=False),
    Column("loaded_at", UTCDateTime, nullable=False),
)


def job_table(name: str, *columns: Column, indexes: tuple[Index, ...] = ()) -> Table:
    """A table of jobs leased by server processes (``fhirfus.bulk.jobtable``): ``id``, the kind's own
    ``columns`` (``job_status()`` among them), then the columns of the life cycle every kind shares, and
    the B-tree of the supervisors' look for orphans (status, heartbeat)."""
    return Table(
        name,
        metadata,
        Column("id", String(36), primary_key=True),
        *columns,
        Column("error", Text, nullable=True),
        Column("attempts", Integer, nullable=False, default=0),
        Column("owner", String(100), nullable=True),
        Column("heartbeat", UTCDateTime, nullable=False),
        Column("directory", Text, nullable=True),
        Column("created", UTCDateTime, nullable=False),
        Column("updated", UTCDateTime, nullable=False),
        Column("expires", UTCDateTime, nullable=True),
        Index(f"ix_{name}_status", "status", "heartbeat"),
        *indexes,
    )


def job_status() -> Column:
    """A job's state (queued, running, completed, failed, cancelled), where each kind's table has it."""
    return Column("status", String(16), nullable=False)


def job_key(jobs: str) -> Column:
    """The job a row belongs to (deleted with it)."""
    return Column("job_id", String(36), ForeignKey(f"{jobs}.id", ondelete="CASCADE"), primary_key=True)


#: Bulk Data ``$export`` jobs (``fhirfus.bulk.jobs``). A job is owned by one server process
#: while it runs; ``heartbeat`` tells the others whether that owner is still alive, so a job left
#: behind by a dead process is picked up again (see ``fhirfus.bulk.worker``).
export_jobs = job_table(
    "export_jobs",
    Column("level", String(16), nullable=False),
    Column("group_id", String(64), nullable=True),
    job_status(),
    Column("request_url", Text, nullable=False),
    Column("params", JsonDocument, nullable=False),
    Column("transaction_time", UTCDateTime, nullable=True),
    Column("progress", Integer, nullable=False, default=0),
    Column("percent", Integer, nullable=False, default=0),
    indexes=(Index("ix_export_jobs_owner", "owner", "status"),),
)

#: Pull definitions of a hub (``fhirfus.pull``): where to pull from, as whom, into which site
#: label, and how far it got. ``since`` is the ``transactionTime`` of the last export loaded in
#: full (the next pull's ``_since``); ``job_url`` the status URL of an export being pulled, so a
#: rerun after a crash resumes its downloads instead of exporting again.
pull_definitions = Table(
    "pull_definitions",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("source_url", Text, nullable=False),
    Column("client_id", String(255), nullable=False),
    Column("key_path", Text, nullable=False),
    Column("site", String(64), nullable=False),
    Column("level", String(16), nullable=False),
    Column("group_id", String(64), nullable=True),
    Column("types", Text, nullable=True),
    Column("every_seconds", Integer, nullable=True),
    Column("since", String(64), nullable=True),
    Column("job_url", Text, nullable=True),
    Column("status", String(16), nullable=False),
    Column("last_error", Text, nullable=True),
    Column("last_count", Integer, nullable=False, default=0),
    Column("last_run", UTCDateTime, nullable=True),
    Column("next_run", UTCDateTime, nullable=True),
    Column("created", UTCDateTime, nullable=False),
)

#: The files of a finished job, listed in its manifest (``kind`` is ``output``, ``error`` or ``deleted``).
export_files = Table(
    "export_files",
    metadata,
    job_key("export_jobs"),
    Column("name", String(128), primary_key=True),
    Column("kind", String(8), nullable=False),
    Column("res_type", String(64), nullable=False),
    Column("seq", Integer, nullable=False),
    Column("count", Integer, nullable=False),
    Column("size", BigInteger, nullable=False),
)

#: The patients a patient- or group-level job exports, staged in the database so that any
#: number of them is a sub-select (no bind-parameter limits, no list in memory).
export_job_patients = Table(
    "export_job_patients",
    metadata,
    job_key("export_jobs"),
    Column("patient_id", String(64), primary_key=True),
)

#: The resources matching a job's ``_typeFilter`` queries, evaluated once when the job starts (the
#: export then probes this table per row instead of re-running each search for every page).
export_job_matches = Table(
    "export_job_matches",
    metadata,
    job_key("export_jobs"),
    Column("resource_pk", SurrogateKey, primary_key=True),
)

#: Bulk ``$import`` jobs (``fhirfus.bulk.imports``): who asked (the caller is rebuilt from these
#: columns when the job runs), the inputs, and ``progress`` — the input and line the next chunk
#: starts at and the counts so far, written in the transaction of each committed chunk, so a job
#: adopted after its process died continues exactly where the last commit left it.
import_jobs = job_table(
    "import_jobs",
    job_status(),
    Column("client_id", String(200), nullable=False),
    Column("role", String(16), nullable=False),
    Column("site", String(64), nullable=True),
    Column("scopes", Text, nullable=False),
    Column("request", JsonDocument, nullable=False),
    Column("progress", JsonDocument, nullable=False),
)

#: One OperationOutcome per input line an import could not load (the job's error file).
import_errors = Table(
    "import_errors",
    metadata,
    job_key("import_jobs"),
    Column("input", Integer, primary_key=True),
    Column("line", Integer, primary_key=True),
    Column("outcome", JsonDocument, nullable=False),
)

#: De-identification crosswalk (``fhirfus.analysis.deid.policy``): the random pseudonym of a Patient in one
#: pseudonym namespace (derived from ``FHIRFUS_DEID_KEY``; the key itself is never stored). A
#: pseudonym is drawn at random the first time a patient is exported under a namespace and
#: reused afterwards, so it is stable under one key and unrelated under another.
deid_crosswalk = Table(
    "deid_crosswalk",
    metadata,
    Column("namespace", String(64), primary_key=True),
    Column("patient_id", String(64), primary_key=True),
    Column("pseudonym", String(32), nullable=False),
    Column("created", UTCDateTime, nullable=False),
    UniqueConstraint("namespace", "pseudonym", name="uq_deid_crosswalk_pseudonym"),
)

#: Registered SMART backend-services clients (``fhirfus clients add``).
auth_clients = Table(
    "auth_clients",
    metadata,
    Column("client_id", String(64), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("role", String(16), nullable=False),
    Column("site", String(64), nullable=True),
    Column("scope", Text, nullable=False),
    Column("jwks", JsonDocument, nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    #: Where the client publishes its keys instead (SMART Backend Services); fetched and cached.
    Column("jwks_url", Text, nullable=True),
    #: When the client was disabled (NULL: enabled): its token requests and access tokens are refused.
    Column("disabled_at", UTCDateTime, nullable=True),
)

#: Client-assertion ``jti`` values already used (replay protection), kept until they expire.
auth_jti = Table(
    "auth_jti",
    metadata,
    Column("jti", String(255), primary_key=True),
    Column("client_id", String(64), nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
)

#: Rate-limit counts shared by every server process of a deployment (``fhirfus.auth.ratelimit``):
#: requests of one caller (a client id, a remote address) under one limit (``name``: ``fhir``,
#: ``token-client``, ``token-address``) in one minute-long window (``window_start`` = seconds since
#: the epoch // 60). Rows older than the previous window are swept.
auth_rate_counts = Table(
    "auth_rate_counts",
    metadata,
    Column("name", String(32), primary_key=True),
    Column("window_start", BigInteger, primary_key=True),
    Column("key", String(200), primary_key=True),
    Column("count", Integer, nullable=False),
)

#: Secrets generated once per deployment and shared by its processes (``fhirfus.auth.signing_secret``):
#: the access-token signing key when ``FHIRFUS_TOKEN_SECRET`` is not set.
auth_secrets = Table(
    "auth_secrets",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("value", Text, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
)

#: People who use the web console (``fhirfus.auth.people``): the same role and site model as clients.
#: ``password_hash`` is argon2id (NULL until the first-login link is used); ``setup_hash`` is the
#: SHA-256 of the one-time first-login or reset token (the token itself is never stored).
auth_people = Table(
    "auth_people",
    metadata,
    Column("person_id", String(64), primary_key=True),
    Column("email", String(320), nullable=False, unique=True),
    Column("role", String(16), nullable=False),
    Column("site", String(64), nullable=True),
    Column("password_hash", Text, nullable=True),
    Column("setup_hash", String(64), nullable=True, unique=True),
    Column("setup_expires_at", UTCDateTime, nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("disabled_at", UTCDateTime, nullable=True),
    #: The base32 TOTP secret (RFC 6238) when the person set up a second factor, and the last time
    #: step a code was accepted for (a code is used once).
    Column("totp_secret", String(64), nullable=True),
    Column("totp_last_step", BigInteger, nullable=True),
)

#: Console sessions: the SHA-256 of the cookie's token, its person, its CSRF token and expiry.
auth_person_sessions = Table(
    "auth_person_sessions",
    metadata,
    Column("token_hash", String(64), primary_key=True),
    Column("person_id", String(64), nullable=False, index=True),
    Column("csrf", String(64), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
)

#: Notifications of Subscriptions waiting to be delivered (``fhirfus.subscriptions``): one row per
#: matching version, queued in the transaction of the write (a rolled-back write queues nothing),
#: delivered oldest first per subscription, deleted once the endpoint accepted it. ``owner`` and
#: ``lease_until``: the server process delivering it now (another may take it once the lease ends);
#: ``attempts``/``due``/``error``: the failures so far, when to try again, and why the last one failed.
subscription_queue = Table(
    "subscription_queue",
    metadata,
    Column("pk", SurrogateKey, primary_key=True, autoincrement=True),
    Column("subscription_id", String(64), nullable=False),
    Column("res_type", String(64), nullable=False),
    Column("res_id", String(64), nullable=False),
    Column("version", Integer, nullable=False),
    Column("created", UTCDateTime, nullable=False),
    Column("due", UTCDateTime, nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("owner", String(100), nullable=True),
    Column("lease_until", UTCDateTime, nullable=True),
    Column("error", Text, nullable=True),
    Index("ix_subscription_queue_subscription", "subscription_id", "pk"),
)
