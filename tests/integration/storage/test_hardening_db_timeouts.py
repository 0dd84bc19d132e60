"""The registry's connections give up instead of hanging: a PostgreSQL that accepts and never
answers, a statement that runs too long on PostgreSQL or SQLite."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from storage import db
from tests.support.faults import Silent
from tests.support.postgres import migrated_database

SLOW_SQLITE = ("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c "
               "WHERE x < 20000000) SELECT count(*) FROM c")  # seconds, not minutes


def test_a_postgres_that_never_answers_fails_the_connect(monkeypatch):
    monkeypatch.setattr(db, "CONNECT_TIMEOUT_S", 1)
    with Silent() as hung:
        engine = db.create_engine_for(f"postgresql+psycopg://u@127.0.0.1:{hung.port}/x")
        with pytest.raises(OperationalError, match="timeout"):
            engine.connect()
        engine.dispose()


def test_a_long_postgres_statement_is_cancelled(monkeypatch):
    monkeypatch.setattr(db, "STATEMENT_TIMEOUT_MS", 200)
    with migrated_database() as url:
        engine = db.create_engine_for(url)
        with engine.connect() as conn, pytest.raises(OperationalError,
                                                     match="statement timeout"):
            conn.execute(text("SELECT pg_sleep(30)"))
        engine.dispose()


def test_a_long_sqlite_statement_is_interrupted_and_the_connection_stays_usable(
        monkeypatch, tmp_path):
    monkeypatch.setattr(db, "SQLITE_STATEMENT_TIMEOUT_S", 0.2)
    engine = db.create_engine_for(f"sqlite:///{tmp_path / 'slow.db'}")
    with engine.connect() as conn:
        with pytest.raises(OperationalError, match="interrupted"):
            conn.execute(text(SLOW_SQLITE))
        conn.rollback()
        assert conn.execute(text("SELECT 1")).scalar() == 1
