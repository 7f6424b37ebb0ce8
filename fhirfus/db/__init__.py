"""The database: schema (SQLAlchemy Core tables), engine, fast row writing, migrations, site confinement.

``tables`` is the schema and ``migrations/`` (Alembic, shipped in the package) creates exactly it;
``visibility`` is the one filter through which every read of resources and their history passes
(a site client's rows only). No FHIR logic lives here.
"""
