"""The same migrations must produce the models' schema on SQLite and PostgreSQL."""

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from app.core.db import make_engine
from app.core.migrate import downgrade, upgrade
from app.models import Base


def _for_this_dialect(dialect: str):
    """Alembic's comparison ignores `Index.ddl_if`; an index declared for one dialect only (the
    PostgreSQL count indexes) is compared on that dialect alone."""

    def include(obj, name, type_, reflected, compare_to):
        ddl_if = getattr(obj, "_ddl_if", None)
        return ddl_if is None or ddl_if.dialect in (None, dialect)

    return include


def test_migrations_match_models(db_url):
    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            ctx = MigrationContext.configure(
                conn, opts={"compare_type": True, "include_object": _for_this_dialect(engine.dialect.name)}
            )
            diff = compare_metadata(ctx, Base.metadata)
        assert diff == [], f"models and migrations disagree: {diff}"
        tables = set(inspect(engine).get_table_names())
        assert {
            "cameras",
            "detections",
            "events",
            "jobs",
            "logs",
            "runtime_config",
            "audit_log",
            "alert_rules",
            "alerts",
            "alert_cooldowns",
        } <= tables
    finally:
        engine.dispose()


def test_downgrade_to_base_and_back(db_url):
    downgrade(db_url, "base")
    engine = make_engine(db_url)
    try:
        assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
    finally:
        engine.dispose()
    upgrade(db_url)
    engine = make_engine(db_url)
    try:
        assert "jobs" in inspect(engine).get_table_names()
    finally:
        engine.dispose()
