"""Engines, sessions and migrations of the registry database.

Nothing here runs at import time: callers pass an explicit SQLAlchemy URL
(``Settings.sqlalchemy_url``). SQLite gets WAL, ``busy_timeout`` and foreign
keys; its *write* transactions start with ``BEGIN IMMEDIATE`` so that racing
writers queue on the busy timeout instead of failing with "database is
locked" when a deferred read lock cannot be upgraded. PostgreSQL needs none of
this: the registry serializes a tenant's writers with ``SELECT ... FOR UPDATE``.

Alembic owns the schema; :func:`migrate` applies it programmatically (no
``alembic.ini``), under an advisory lock on PostgreSQL so that replicas
starting together do not race.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import NullPool

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
SQLITE_BUSY_TIMEOUT_MS = 30_000
#: A registry that does not answer must fail a call, not hang it (and the replica
#: or request waiting on it): PostgreSQL's connect timeout and statement timeout.
CONNECT_TIMEOUT_S = 5
STATEMENT_TIMEOUT_MS = 30_000
#: SQLite is a local file: its connect and lock waits are bounded by the busy timeout
#: (SQLITE_BUSY_TIMEOUT_MS); a statement executing longer than this is interrupted.
SQLITE_STATEMENT_TIMEOUT_S = 60.0
_WRITE_OPTION = "loraloop_write"
# Alembic's `context` is module-global state: one migration at a time per process.
_ALEMBIC_LOCK = threading.Lock()


def create_engine_for(url: str, *, echo: bool = False) -> Engine:
    """An engine for ``url``, with SQLite pragmas and immediate write transactions."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "postgresql":
        return create_engine(
            url,
            echo=echo,
            pool_pre_ping=True,
            pool_timeout=CONNECT_TIMEOUT_S,
            connect_args={
                "connect_timeout": CONNECT_TIMEOUT_S,
                "options": f"-c statement_timeout={STATEMENT_TIMEOUT_MS}",
            },
        )
    if parsed.get_backend_name() != "sqlite":
        return create_engine(url, echo=echo, pool_pre_ping=True)
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(
        url,
        echo=echo,
        # One short-lived connection per session: a process-shared pool of SQLite
        # handles gains nothing and keeps files open across fork().
        poolclass=NullPool,
        connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, record) -> None:
        # Hand transaction control to SQLAlchemy's "begin" event below.
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        _enable_wal(cursor)
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()
        _limit_statements(dbapi_conn, record.info)

    @event.listens_for(engine, "before_cursor_execute")
    def _statement_starts(conn, *_args) -> None:
        conn.connection.info[_STARTED] = time.monotonic()

    @event.listens_for(engine, "after_cursor_execute")
    def _statement_ends(conn, *_args) -> None:
        conn.connection.info[_STARTED] = None

    @event.listens_for(engine, "begin")
    def _on_begin(conn) -> None:
        immediate = conn.get_execution_options().get(_WRITE_OPTION, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


_STARTED = "loraloop_statement_started"


def _limit_statements(dbapi_conn: sqlite3.Connection, info: dict) -> None:
    """Interrupt a statement executing for over ``SQLITE_STATEMENT_TIMEOUT_S`` (SQLite has
    no statement timeout: a progress handler, called every few thousand VM steps, checks
    the start time that ``before_cursor_execute`` records in the connection's ``info``)."""
    info[_STARTED] = None

    def check() -> int:
        started = info.get(_STARTED)
        return int(started is not None
                   and time.monotonic() - started > SQLITE_STATEMENT_TIMEOUT_S)

    dbapi_conn.set_progress_handler(check, 10_000)


def _enable_wal(cursor) -> None:
    """Switch the database file to WAL (persistent), retrying while another opener holds it.

    Switching needs an exclusive lock and SQLite answers "database is locked"
    at once, without the busy handler, when two processes open a new file together.
    """
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
    delay = 0.005
    while True:
        try:
            if cursor.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.2)


def make_session_factory(engine_or_url: Engine | str) -> sessionmaker[Session]:
    """A session factory; objects stay readable after commit (``expire_on_commit=False``)."""
    engine = create_engine_for(engine_or_url) if isinstance(engine_or_url, str) else engine_or_url
    return sessionmaker(bind=engine, expire_on_commit=False)


@contextmanager
def write_transaction(session: Session) -> Iterator[Session]:
    """One write transaction on ``session`` (``BEGIN IMMEDIATE`` on SQLite), committed on exit."""
    with session.begin():
        session.connection(execution_options={_WRITE_OPTION: True})
        yield session


@contextmanager
def read_transaction(session: Session) -> Iterator[Session]:
    """One read transaction on ``session``, ended on exit."""
    with session.begin():
        yield session


def alembic_config(url: str) -> Config:
    """An Alembic config for ``url`` built in code (``alembic.ini`` is not needed).

    Developers create a revision with
    ``alembic.command.revision(alembic_config(url), "message", autogenerate=True)``.
    """
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    # ConfigParser interpolation: a literal % in a password must be doubled.
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def migrate(url: str, revision: str = "head") -> None:
    """Upgrade the database at ``url`` to ``revision`` (default: the newest)."""
    log.info("migrating registry database %s to %s", _safe(url), revision)
    with _ALEMBIC_LOCK:
        command.upgrade(alembic_config(url), revision)


upgrade_to_head = migrate


def downgrade(url: str, revision: str = "-1") -> None:
    """Downgrade the database at ``url`` (default: one step)."""
    log.info("downgrading registry database %s to %s", _safe(url), revision)
    with _ALEMBIC_LOCK:
        command.downgrade(alembic_config(url), revision)


def current_revision(url_or_engine: str | Engine) -> str | None:
    """The revision the database is at, or ``None`` when it is empty."""
    engine = create_engine_for(url_or_engine) if isinstance(url_or_engine, str) else url_or_engine
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        if engine is not url_or_engine:
            engine.dispose()


@cache
def head_revision() -> str:
    """The newest revision shipped with this package."""
    head = ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
    assert head is not None, "storage/migrations/versions holds no revision"
    return head


def open_registry(url: str, *, upgrade: bool = True) -> sessionmaker[Session]:
    """A session factory for the registry at ``url``.

    With ``upgrade`` (the default), a database that is empty or behind this
    code's schema is migrated first; one already at head costs a single read
    of its revision, not an Alembic run (every CLI command opens the registry).
    """
    engine = create_engine_for(url)
    if upgrade and current_revision(engine) != head_revision():
        migrate(url)
    return make_session_factory(engine)


def _safe(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True)
