"""Alembic environment of the registry, driven by ``storage.db`` (no alembic.ini)."""

from __future__ import annotations

from alembic import context
from sqlalchemy import text

from storage.db import _WRITE_OPTION, create_engine_for
from storage.models import Base

# A fixed key: replicas starting together take turns migrating a PostgreSQL database.
_PG_MIGRATION_LOCK = 0x10A4_A100


def run_migrations_offline() -> None:
    context.configure(
        url=context.config.get_main_option("sqlalchemy.url"),
        target_metadata=Base.metadata,
        literal_binds=True,
        render_as_batch=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    engine = create_engine_for(context.config.get_main_option("sqlalchemy.url"))
    try:
        with engine.connect() as connection:
            # BEGIN IMMEDIATE on SQLite: a second migrator waits, then finds the work done.
            connection.execution_options(**{_WRITE_OPTION: True})
            context.configure(
                connection=connection,
                target_metadata=Base.metadata,
                render_as_batch=True,
                compare_type=True,
            )
            with context.begin_transaction():
                if connection.dialect.name == "postgresql":
                    connection.execute(
                        text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_MIGRATION_LOCK}
                    )
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
