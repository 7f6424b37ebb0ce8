"""The ``fhirfus`` command line."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import typer
from rich.console import Console

from fhirfus.settings import get_settings

app = typer.Typer(help="fhirfus: FHIR R4 server for MRgFUS cervical-dystonia research.", no_args_is_help=True)
db_app = typer.Typer(help="Database schema migrations.", no_args_is_help=True)
app.add_typer(db_app, name="db")
clients_app = typer.Typer(help="SMART backend-services clients.", no_args_is_help=True)
app.add_typer(clients_app, name="clients")
export_app = typer.Typer(help="Exports: Bulk Data NDJSON, de-identified analysis datasets.", no_args_is_help=True)
app.add_typer(export_app, name="export")
users_app = typer.Typer(help="People who use the web console at /app.", no_args_is_help=True)
app.add_typer(users_app, name="users")
pull_app = typer.Typer(help="Pull a site server's Bulk Data export into this one (the hub side).")
app.add_typer(pull_app, name="pull")
console = Console(stderr=True)


@app.command()
def serve(
    host: str = typer.Option("127.0.0.1", help="Interface to listen on."),
    port: int = typer.Option(8000, help="TCP port."),
    workers: int = typer.Option(None, help="Worker processes [default: FHIRFUS_WORKERS; 0 there: one per core]."),
    migrate: bool = typer.Option(True, help="Apply pending migrations first."),
) -> None:
    """Serve the FHIR API on http://HOST:PORT/fhir."""
    import uvicorn

    settings = get_settings()
    with _opening(settings.database_url):
        console.print(f"database: {_where(settings.database_url)}", soft_wrap=True)
    if migrate:
        _upgrade(settings.database_url, "head")
    if settings.auth == "off":
        console.print(
            "[yellow]Authentication is OFF (FHIRFUS_AUTH=off): development mode, "
            "do not expose this server beyond loopback.[/yellow]"
        )
    elif settings.auth != "smart":
        console.print(f"[red]FHIRFUS_AUTH must be 'smart' or 'off', got {settings.auth!r}[/red]")
        raise typer.Exit(2)
    processes = _worker_count(workers if workers is not None else settings.workers, settings.database_url)
    console.print(f"fhirfus on http://{host}:{port}/fhir ({processes} worker process{'es' if processes > 1 else ''})")
    uvicorn.run(
        "fhirfus.api.app:create_app", factory=True, host=host, port=port, workers=processes,
        log_level="info", access_log=False, log_config=_log_config(),
        http="fhirfus.api.limits:FhirHttpProtocol",  # an import string, like the app: cli does not import api
    )


def _worker_count(asked: int, database_url: str) -> int:
    """Every core by default: the processes share what they must (signing secret, rate counts, jobs,
    sessions) through the database. An in-memory SQLite database exists once per process: one."""
    from sqlalchemy.engine import make_url

    parsed = make_url(database_url)
    if parsed.get_backend_name() == "sqlite" and parsed.database in (None, "", ":memory:"):
        return 1
    if asked < 0:
        raise _fail(f"--workers must be 0 (one per core) or more, got {asked}")
    return asked or os.cpu_count() or 1


def _log_config() -> dict:
    """uvicorn's logging plus fhirfus's request log (``api/request_log.py``) in the same style; as a
    configuration, so that every worker process gets it."""
    import copy

    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config["loggers"]["fhirfus.requests"] = {"handlers": ["default"], "level": "INFO", "propagate": False}
    return config


def _safe_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def _where(url: str) -> str:
    """The database a URL names, as a person can find it: an absolute file path for SQLite."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database and parsed.database != ":memory:":
        return f"SQLite file {Path(parsed.database).resolve()}"
    return _safe_url(url)


def _fail(message: str, code: int = 2) -> typer.Exit:
    console.print(f"[red]{message}[/red]", soft_wrap=True)
    return typer.Exit(code)


def _database(create: bool = False) -> str:
    """The database of a data command: said out loud, migrated, and never created by accident (a
    relative SQLite path names a different file in every folder)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    url = get_settings().database_url
    try:
        parsed = make_url(url)
        where = _where(url)
    except ArgumentError as exc:
        raise _fail(f"FHIRFUS_DATABASE_URL is not a database URL ({url!r}): {exc}") from exc
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:") and not create:
        path = Path(parsed.database or "").resolve()
        if not path.is_file():
            relative = "" if Path(parsed.database or "").is_absolute() else f" (relative to the current folder {Path.cwd()})"
            raise _fail(f"no database at {path}{relative}; run this from the folder of your database, set "
                        "FHIRFUS_DATABASE_URL to it, or create a new one with `fhirfus db upgrade` (or --create)")
    console.print(f"database: {where}", soft_wrap=True)
    _upgrade(url, "head")
    return url


def _store(url: str):
    """The store of a data command, with fhirfus's own search parameters registered (as the server
    does at start-up), so what the command writes is indexed for them too."""
    from fhirfus.db.engine import make_engine
    from fhirfus.domain.conformance import load_conformance
    from fhirfus.heap import freeze_start_up_heap
    from fhirfus.store.repository import Store
    from fhirfus.subscriptions.service import queue_writes

    load_conformance()
    freeze_start_up_heap()  # as the server does at start-up
    store = Store(make_engine(url))
    queue_writes(store, get_settings())  # what a command writes notifies Subscriptions as a request's write does
    return store


def _upgrade(url: str, revision: str) -> None:
    from fhirfus.db import migrate
    from fhirfus.db.engine import make_engine

    with _opening(url):
        engine = make_engine(url)
        try:
            migrate.upgrade(engine, revision)
        finally:
            engine.dispose()


@contextmanager
def _opening(url: str) -> Iterator[None]:
    """A database that cannot be opened → one line saying which and why, not a traceback."""
    from sqlalchemy.exc import ArgumentError, SQLAlchemyError

    try:
        yield
    except (SQLAlchemyError, ImportError) as exc:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        try:
            where = _where(url)
        except ArgumentError:
            where = repr(url)
        raise _fail(f"cannot open the database {where}: {reason}") from exc


@db_app.command("upgrade")
def db_upgrade(revision: str = typer.Argument("head", help="Target revision.")) -> None:
    """Apply migrations up to REVISION (default: head); creates the database when there is none."""
    url = get_settings().database_url
    with _opening(url):
        console.print(f"database: {_where(url)}", soft_wrap=True)
    _upgrade(url, revision)
    console.print(f"database at {revision}")


@db_app.command("downgrade")
def db_downgrade(revision: str = typer.Argument(..., help="Target revision ('base' drops everything).")) -> None:
    """Revert migrations down to REVISION."""
    from fhirfus.db import migrate
    from fhirfus.db.engine import make_engine

    url = get_settings().database_url
    with _opening(url):
        console.print(f"database: {_where(url)}", soft_wrap=True)
        engine = make_engine(url)
        try:
            migrate.downgrade(engine, revision)
        finally:
            engine.dispose()
    console.print(f"database at {revision}")


@db_app.command("current")
def db_current() -> None:
    """Print the current schema revision."""
    from fhirfus.db import migrate
    from fhirfus.db.engine import make_engine

    url = get_settings().database_url
    with _opening(url):
        engine = make_engine(url)
        try:
            typer.echo(migrate.current_revision(engine) or "base")
        finally:
            engine.dispose()


@app.command()
def demo(
    only_if_empty: bool = typer.Option(False, "--if-empty", help="Do nothing when the database holds data."),
    directory: Path = typer.Option(Path("var/demo"), "--dir", help="Where the generated site files go."),
    create: bool = typer.Option(False, "--create", help="Create the database when there is none."),
) -> None:
    """Generate the synthetic 3-site cohort as site files and import them (the real import path)."""
    from rich.progress import Progress

    from fhirfus.ingest.demo import GROUP_ID, is_empty, load_demo

    store = _store(_database(create))
    if only_if_empty and not is_empty(store):
        console.print("demo: the database already holds data; nothing loaded")
        return
    with Progress(console=console) as progress:
        task = progress.add_task("importing the demo cohort", total=None)
        reports = load_demo(store, directory, lambda n: progress.advance(task, n))
    store.analyze()
    patients = sum(r.patients_loaded for r in reports)
    console.print(f"demo cohort: {patients} patients from {len(reports)} sites (site files in {directory}); "
                  f"Group/{GROUP_ID}")


@app.command()
def load(
    files: list[Path] = typer.Argument(..., exists=True, help="Bundle JSON or NDJSON files, or folders of them."),
    chunk_size: int = typer.Option(1000, min=1, help="NDJSON resources per transaction."),
    create: bool = typer.Option(False, "--create", help="Create the database when there is none."),
) -> None:
    """Load Bundle JSON and NDJSON files (transaction per chunk; a rerun skips what is stored)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from fhirfus.errors import FhirError
    from fhirfus.ingest.load import count_resources, fhir_files, load_files

    settings = get_settings()
    files, skipped = fhir_files(list(files))
    for path, reason in skipped:
        console.print(f"skipped {path}: {reason}", soft_wrap=True)
    if not files:
        raise _fail("no Bundle JSON or NDJSON file to load")
    store = _store(_database(create))
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console) as progress:
        task = progress.add_task("loading", total=count_resources(list(files)))
        try:
            report = load_files(
                store, list(files), settings.base_url or "", lambda n: progress.advance(task, n), chunk_size
            )
        except FhirError as exc:
            console.print(f"[red]load failed: {exc.message}[/red]")
            for issue in exc.issues[1:6]:
                console.print(f"  {issue.diagnostics}")
            raise typer.Exit(1) from exc
    store.analyze()
    console.print(f"loaded {report.loaded} resources in {report.chunks} chunks; skipped {report.skipped} already stored")


@app.command("import")
def import_(
    files: list[Path] = typer.Argument(..., exists=True, dir_okay=False, help="CSV/TSV/XLSX files (site registry, REDCap export)."),
    mapping: str = typer.Option(..., "--mapping", "-m", help="Mapping spec in fhirfus/ig/inbound (e.g. site-registry, redcap)."),
    site: str = typer.Option(..., "--site", "-s", help="Site code: patient identifiers live in …/site-patient/SITE."),
    mode: str = typer.Option("replace", "--mode", help="replace: the file is the truth for the patients it lists "
                             "(rows removed from it are deleted); merge: a partial file, nothing is removed."),
    locale: str = typer.Option(None, "--locale", help="How the file writes dates and numbers: iso (default) or de "
                               "(15.03.2022, 0,38)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Show what the import would change; write nothing."),
    report_path: Path = typer.Option(None, "--report", help="Where to write the bad-row report (CSV)."),
    changes_path: Path = typer.Option(None, "--changes", help="Where to write the list of changes (CSV)."),
    create: bool = typer.Option(False, "--create", help="Create the database when there is none."),
) -> None:
    """Import site files through a declarative mapping: a preview of every change, then one transaction."""
    from fhirfus.errors import FhirError
    from fhirfus.ingest.plan import commit_plan, plan_import
    from fhirfus.ingest.site_import import report_of, write_changes, write_report

    settings = get_settings()
    store = _store(_database(create))
    try:
        with console.status(f"reading {len(files)} file(s) and comparing them with site {site}"):
            plan = plan_import(store, mapping, site, list(files), mode, locale)
    except FhirError as exc:
        raise _fail(f"import failed: {exc.message}") from exc
    if plan.locale_recognised:
        console.print(f"reading dates and numbers as locale {plan.locale.name} (recognised in the file; "
                      "--locale iso to override)", soft_wrap=True)
    _show_plan(plan)
    if changes_path:
        write_changes(plan, changes_path)
        console.print(f"changes written to {changes_path}")
    if plan.conflicts:
        for conflict in plan.conflicts:
            console.print(f"[red]refused: {conflict}[/red]", soft_wrap=True)
        raise typer.Exit(2)
    provenance = None
    if dry_run:
        console.print("dry run: nothing written")
    else:
        try:
            with console.status(f"writing {len(plan.changes)} changes in one transaction"):
                provenance = commit_plan(store, plan, base_url=settings.base_url or "").provenance
        except FhirError as exc:
            raise _fail(f"import failed, nothing written: {exc.message}") from exc
        store.analyze()
    report = report_of(plan, provenance)
    console.print(
        f"{report.rows} rows: {report.patients_loaded} patients {'to load' if dry_run else 'loaded'}, "
        f"{report.patients_rejected} rejected; resources {report.resources_created} created, "
        f"{report.resources_updated} updated, {report.resources_deleted} deleted, {report.resources_unchanged} unchanged"
        + (f"; {report.provenance}" if report.provenance else ""), soft_wrap=True,
    )
    if report.errors:
        target = report_path or Path(f"{files[0].stem}.import-report.csv")
        write_report(report, target)
        console.print(f"report written to {target}")
        raise typer.Exit(1)


def _show_plan(plan) -> None:
    """The preview: rejected rows, held-back rows, the changes of patients and visits."""
    if plan.errors:
        _table("rejected rows", ("line", "patient", "column", "value", "reason"),
               [(str(e.line), e.patient or "?", e.column, e.value, e.reason) for e in plan.errors])
    for held in plan.held_back:
        console.print(held.sentence(), soft_wrap=True)
    shown = plan.listed_changes()
    if shown:
        _table(f"changes ({plan.mode})", ("patient", "action", "record", "type", "date", "line", "change"),
               [(c.patient, c.action, c.record, c.resource_type, c.date or "", str(c.line or ""), c.described())
                for c in shown])
    if plan.kept_patients:
        console.print(f"{plan.kept_patients} patients of site {plan.site} are not in this file and stay as they are")
    console.print(plan.summary(), soft_wrap=True)


def _table(title: str, headers: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    """A table on a terminal; tab-separated lines, never cut, when the output is a file or a pipe."""
    from rich.table import Table

    if not console.is_terminal:  # written as is: rich would expand the tabs
        console.file.write(f"{title}:\n" + "".join("\t".join(row) + "\n" for row in [headers, *rows]))
        console.file.flush()
        return
    table = Table(*headers, title=title)
    for column in table.columns:
        column.overflow = "fold"
    for row in rows:
        table.add_row(*row)
    console.print(table)


@app.command()
def reindex(res_type: str = typer.Option(None, "--type", help="Only this resource type.")) -> None:
    """Rebuild the search index (after search-parameter definitions change)."""
    from rich.progress import Progress

    from fhirfus.store import reindex as reindexing
    store = _store(_database())
    total = reindexing.count_live(store, res_type)
    with Progress(console=console) as progress:
        task = progress.add_task(f"reindexing {res_type or 'all types'}", total=total)
        done = reindexing.reindex(store, res_type, lambda n: progress.advance(task, n))
    console.print(f"reindexed {done} resources")


@export_app.command("bulk")
def export_bulk(
    out: Path = typer.Option(..., "--out", file_okay=False, help="Directory for the NDJSON files and manifest.json."),
    types: str = typer.Option(None, "--type", help="Only these resource types (comma-separated)."),
    since: str = typer.Option(None, "--since", help="Only resources changed after this FHIR instant."),
) -> None:
    """Bulk Data export of the whole server into DIR (NDJSON per type, like $export)."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from fhirfus.bulk.local import MANIFEST, export_to_directory, local_request
    from fhirfus.errors import FhirError

    settings = get_settings()
    _database()
    try:
        request = local_request(types, since)
    except FhirError as exc:
        console.print(f"[red]{exc.message}[/red]")
        raise typer.Exit(2) from exc
    store = _store(settings.database_url)
    columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"), TimeElapsedColumn())
    with Progress(*columns, console=console) as progress:
        task = progress.add_task("exporting", total=100)

        def report(written: int, fraction: float) -> None:
            progress.update(task, completed=fraction * 100, description=f"exporting: {written:,} resources")

        result = export_to_directory(store, settings, request, out, report)
        progress.update(task, completed=100, description=f"exported: {result.count:,} resources")
    console.print(f"exported {result.count:,} resources in {len(result.files)} files to {out} (see {out / MANIFEST})")


@export_app.command("analysis")
def export_analysis_command(
    out: Path = typer.Option(..., "--out", file_okay=False, help="Directory for the analysis files."),
    group: str = typer.Option(None, "--group", help="Cohort Group id (default: every patient)."),
    fmt: str = typer.Option("csv", "--format", help="csv or parquet."),
    policy: str = typer.Option(None, "--policy", help="De-identification policy in fhirfus/ig/policies (default: safe-harbor)."),
) -> None:
    """De-identified analysis dataset, data dictionary, statistics.json and report.html of a cohort."""
    from rich.progress import Progress

    from fhirfus.analysis.export import export_analysis
    from fhirfus.errors import FhirError

    settings = get_settings()
    _database()
    with Progress(console=console) as progress:
        task = progress.add_task("analysis export", total=None)

        def report(stage: str, done: int, total: int | None) -> None:
            progress.update(task, description=f"analysis export: {stage}", completed=done, total=total or None)

        try:
            target = export_analysis(settings, group, out, fmt, policy, report)
        except FhirError as exc:
            console.print(f"[red]{exc.message}[/red]")
            raise typer.Exit(2) from exc
    console.print(f"analysis files written to {target}")


@app.command("subscription-secret")
def subscription_secret(subscription_id: str = typer.Argument(..., help="The id of the Subscription.")) -> None:
    """Print the key that signs a Subscription's notifications (``X-Fhirfus-Signature``), for its receiver."""
    from fhirfus.subscriptions.delivery import signing_key

    settings = get_settings()
    if not settings.subscription_key:
        console.print("[red]FHIRFUS_SUBSCRIPTION_KEY is not set: notifications are not signed[/red]")
        raise typer.Exit(2)
    print(signing_key(settings.subscription_key, subscription_id))


def _clients_store():
    """The store of a ``clients`` command: migrated, without the FHIR start-up the data commands need."""
    from fhirfus.db.engine import make_engine
    from fhirfus.store.repository import Store

    settings = get_settings()
    _upgrade(settings.database_url, "head")
    return Store(make_engine(settings.database_url))


def _read_jwks(path: Path | None) -> dict | None:
    import orjson

    if path is None:
        return None
    try:
        return orjson.loads(path.read_bytes())
    except orjson.JSONDecodeError as exc:
        console.print(f"[red]{path} is not JSON: {exc}[/red]")
        raise typer.Exit(2) from exc


def _client_command(action, *args, **kwargs):
    """Run a registry action; its typed errors become a message and exit code 1 (unknown client) or 2."""
    from fhirfus.errors import FhirError, NotFound

    try:
        return action(*args, **kwargs)
    except FhirError as exc:
        console.print(f"[red]{exc.message}[/red]")
        raise typer.Exit(1 if isinstance(exc, NotFound) else 2) from exc


def _client_fields(client) -> dict:
    keys = [{"kid": k.get("kid"), "kty": k.get("kty"), "alg": k.get("alg")} for k in (client.jwks or {}).get("keys", [])]
    return {
        "client_id": client.client_id, "name": client.name, "role": client.role, "site": client.site,
        "scope": client.scope, "enabled": client.enabled,
        "disabled_at": client.disabled_at.isoformat() if client.disabled_at else None,
        "jwks_url": client.jwks_url, "keys": keys,
        "created_at": client.created_at.isoformat() if client.created_at else None,
    }


def _keys_text(fields: dict) -> str:
    if fields["jwks_url"]:
        return fields["jwks_url"]
    return ", ".join(f"{k['kid'] or '(no kid)'} {k['alg'] or k['kty']}" for k in fields["keys"])


@clients_app.command("add")
def clients_add(
    name: str = typer.Option(..., "--name", help="Who the client is (shown in audit events)."),
    role: str = typer.Option(..., "--role", help="site, analyst or admin."),
    scope: str = typer.Option(..., "--scope", help='Allowed SMART scopes, e.g. "system/*.cruds".'),
    jwks: Path = typer.Option(None, "--jwks", exists=True, dir_okay=False, help="The client's public keys (JWKS)."),
    jwks_url: str = typer.Option(None, "--jwks-url", help="Or: where the client publishes its JWKS (https)."),
    site: str = typer.Option(None, "--site", help="The site a site client belongs to."),
) -> None:
    """Register a client; prints its client_id."""
    from fhirfus.auth.clients import register

    client = _client_command(register, _clients_store(), name, role, scope, _read_jwks(jwks), site, jwks_url=jwks_url)
    typer.echo(client.client_id)


@clients_app.command("list")
def clients_list(as_json: bool = typer.Option(False, "--json", help="One JSON array instead of a table.")) -> None:
    """The registered clients, oldest first."""
    import orjson
    from rich.table import Table

    from fhirfus.auth.clients import all_clients

    rows = [_client_fields(c) for c in all_clients(_clients_store())]
    if as_json:
        typer.echo(orjson.dumps(rows, option=orjson.OPT_INDENT_2).decode())
        return
    table = Table(title=f"{len(rows)} clients")
    table.add_column("client_id", no_wrap=True, min_width=36)  # whole: it is what gets copied
    for header in ("name", "role", "site", "scope", "keys", "status"):
        table.add_column(header, overflow="fold")  # narrow terminals wrap, never cut
    for row in rows:
        table.add_row(row["client_id"], row["name"], row["role"], row["site"] or "", row["scope"], _keys_text(row),
                      "enabled" if row["enabled"] else "[red]disabled[/red]")
    Console().print(table)


@clients_app.command("show")
def clients_show(client_id: str = typer.Argument(..., help="The client's id.")) -> None:
    """One client: role, site, scopes, keys, status."""
    from rich.table import Table

    from fhirfus.auth.clients import get

    fields = _client_fields(_client_command(get, _clients_store(), client_id))
    table = Table("field", "value", show_header=False, title=f"client {client_id}")
    for name, value in fields.items():
        if name == "keys":
            value = "\n".join(f"kid {k['kid'] or '-'}  kty {k['kty']}  alg {k['alg'] or '-'}" for k in value) or None
        table.add_row(name, "" if value is None else str(value))
    Console().print(table)


@clients_app.command("disable")
def clients_disable(client_id: str = typer.Argument(..., help="The client's id.")) -> None:
    """Refuse the client's token requests now; its live access tokens stop working within
    FHIRFUS_CLIENT_RECHECK_MS."""
    from fhirfus.auth.clients import set_enabled

    _client_command(set_enabled, _clients_store(), client_id, False)
    console.print(f"client {client_id} disabled")


@clients_app.command("enable")
def clients_enable(client_id: str = typer.Argument(..., help="The client's id.")) -> None:
    """Accept the client's token requests again."""
    from fhirfus.auth.clients import set_enabled

    _client_command(set_enabled, _clients_store(), client_id, True)
    console.print(f"client {client_id} enabled")


@clients_app.command("remove")
def clients_remove(
    client_id: str = typer.Argument(..., help="The client's id."),
    yes: bool = typer.Option(False, "--yes", help="Do not ask for confirmation."),
) -> None:
    """Delete the client (its audit events stay); as for disable, its live tokens stop working."""
    from fhirfus.auth.clients import get, remove

    store = _clients_store()
    client = _client_command(get, store, client_id)
    if not yes:
        typer.confirm(f"remove client {client_id} ({client.name})?", abort=True)
    _client_command(remove, store, client_id)
    console.print(f"client {client_id} removed")


@clients_app.command("keys")
def clients_keys(
    client_id: str = typer.Argument(..., help="The client's id."),
    jwks: Path = typer.Option(None, "--jwks", exists=True, dir_okay=False, help="The client's new public keys (JWKS)."),
    jwks_url: str = typer.Option(None, "--jwks-url", help="Or: where the client publishes its JWKS (https)."),
) -> None:
    """Replace the client's keys (rotation): assertions signed with the old keys are refused from now on."""
    from fhirfus.auth.clients import set_keys

    client = _client_command(set_keys, _clients_store(), client_id, _read_jwks(jwks), jwks_url)
    console.print(f"client {client_id} now uses {_keys_text(_client_fields(client))}")


def _setup_link(base: str | None, token: str) -> str:
    root = (base or "http://127.0.0.1:8000/fhir").rstrip("/").removesuffix("/fhir")
    return f"{root}/app/setup?token={token}"


@users_app.command("add")
def users_add(
    email: str = typer.Option(..., "--email", help="The person's email (their login)."),
    role: str = typer.Option(..., "--role", help="site, analyst or admin."),
    site: str = typer.Option(None, "--site", help="The site of a site coordinator."),
) -> None:
    """Add a person; prints a one-time first-login link (valid 3 days) to send them."""
    from fhirfus.auth.people import add_person

    person, token = _client_command(add_person, _clients_store(), email, role, site)
    console.print(f"{person.email} ({person.role}{', site ' + person.site if person.site else ''}) added; "
                  "first-login link:")
    typer.echo(_setup_link(get_settings().base_url, token))


@users_app.command("reset-link")
def users_reset_link(email: str = typer.Option(..., "--email", help="The person's email.")) -> None:
    """A new one-time link to choose a password (the old one keeps working until it is used)."""
    from fhirfus.auth.people import reset_link_token

    token = _client_command(reset_link_token, _clients_store(), email)
    typer.echo(_setup_link(get_settings().base_url, token))


@users_app.command("list")
def users_list() -> None:
    """The people with console accounts."""
    from fhirfus.auth.people import list_people

    for person in list_people(_clients_store()):
        state = "enabled" if person.enabled else "disabled"
        typer.echo(f"{person.email}\t{person.role}\t{person.site or '-'}\t{state}\t"
                   f"{'password set' if person.has_password else 'link not used yet'}")


@users_app.command("disable")
def users_disable(email: str = typer.Option(..., "--email", help="The person's email.")) -> None:
    """Disable a person: their sessions end at once."""
    from fhirfus.auth.people import set_enabled

    _client_command(set_enabled, _clients_store(), email, False)
    console.print(f"{email} disabled")


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _duration(text: str | None) -> int | None:
    """``30s``, ``15m``, ``1h``, ``1d`` (or plain seconds) as seconds."""
    if text is None:
        return None
    number, unit = (text[:-1], text[-1]) if text and text[-1] in _UNITS else (text, "s")
    if not number.isdigit() or int(number) == 0:
        raise _fail(f"--every must look like 30s, 15m, 1h or 1d, got {text!r}")
    return int(number) * _UNITS[unit]


@pull_app.callback(invoke_without_command=True)
def pull(
    ctx: typer.Context,
    source: str = typer.Option(None, "--from", help="The source's FHIR base URL (e.g. https://site-a/fhir)."),
    client_id: str = typer.Option(None, "--client-id", help="This hub's client id at the source."),
    key: Path = typer.Option(None, "--key", dir_okay=False, help="The private key (PEM, or a JWK with its kid)."),
    site: str = typer.Option(None, "--site", help="The site label the pulled data gets here."),
    group: str = typer.Option(None, "--group", help="Export this Group at the source (default: everything)."),
    patients: bool = typer.Option(False, "--patients", help="Export every patient's compartment (Patient/$export)."),
    types: str = typer.Option(None, "--type", help="Only these resource types (comma-separated)."),
    every: str = typer.Option(None, "--every", help="Pull again at this interval (30s, 15m, 1h, 1d); stored for "
                                                    "the server's schedule too."),
    name: str = typer.Option(None, "--name", help="The pull definition's name (default: the site); with only "
                                                  "--name, run a stored definition."),
    create: bool = typer.Option(False, "--create", help="Create the database when there is none."),
) -> None:
    """Pull from a site server: export (incremental after the first), download, load under --site."""
    if ctx.invoked_subcommand is not None:
        return
    import time
    from datetime import UTC, datetime

    from fhirfus.errors import FhirError
    from fhirfus.pull import definitions
    from fhirfus.pull.run import pull_once

    settings = get_settings()
    store = _store(_database(create))
    given = (source, client_id, key, site)
    try:
        if any(v is not None for v in given):
            if not all(v is not None for v in given):
                raise _fail("a pull needs --from, --client-id, --key and --site (or only --name of a stored one)")
            definition = definitions.save(store, definitions.Definition(
                name or site, source, client_id, str(key.resolve()), site, group,
                tuple(t.strip() for t in (types or "").split(",") if t.strip()), _duration(every),
                patient_level=patients),
                datetime.now(UTC))
        elif name:
            definition = definitions.get(store, name)
        else:
            raise _fail("a pull needs --from, --client-id, --key and --site (or --name of a stored one)")
    except FhirError as exc:
        raise _fail(exc.message) from exc
    interval = _duration(every)
    while True:
        try:
            report = pull_once(store, definitions.get(store, definition.name), Path(settings.pull_dir),
                               lambda: datetime.now(UTC), on_stage=lambda text: console.print(text, soft_wrap=True),
                               max_file_bytes=settings.pull_max_file_bytes, hub_base=settings.base_url or "")
            typer.echo(report.line())
        except FhirError as exc:
            console.print(f"[red]{exc.message}[/red]", soft_wrap=True)
            if interval is None:
                raise typer.Exit(1) from exc
        if interval is None:
            return
        time.sleep(interval)


@pull_app.command("list")
def pull_list(as_json: bool = typer.Option(False, "--json", help="One JSON array instead of a table.")) -> None:
    """The stored pull definitions: source, site, watermark, status and last error."""
    import orjson

    from fhirfus.pull.definitions import all_definitions

    rows = [d.to_json() for d in all_definitions(_clients_store())]
    if as_json:
        typer.echo(orjson.dumps(rows, option=orjson.OPT_INDENT_2).decode())
        return
    _table("pull definitions", ("name", "source", "site", "since", "status", "last error"),
           [(r["name"], r["source"], r["site"], r["since"] or "", r["status"], r["last_error"] or "") for r in rows])


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("fhirfus.requests").setLevel(logging.INFO)  # the request log of `fhirfus serve`
    app()


if __name__ == "__main__":
    main()
