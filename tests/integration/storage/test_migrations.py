"""Alembic migrations: the schema is built from empty, matches the models, and steps back."""

from __future__ import annotations

import subprocess
import sys
import threading

import sqlalchemy as sa

from storage import create_engine_for, current_revision, downgrade, head_revision, migrate
from storage.models import Base
from tests.support.waiting import wait_until

TABLES = {
    "tenants",
    "adapter_versions",
    "aliases",
    "audit_events",
    "dataset_snapshots",
    "dataset_members",
}


def _tables(url: str) -> set[str]:
    engine = create_engine_for(url)
    try:
        return set(sa.inspect(engine).get_table_names()) - {"alembic_version"}
    finally:
        engine.dispose()


def test_upgrade_from_empty_downgrade_one_step_and_upgrade_again(empty_db_url):
    assert current_revision(empty_db_url) is None
    assert _tables(empty_db_url) == set()

    migrate(empty_db_url)
    assert current_revision(empty_db_url) == head_revision()
    assert _tables(empty_db_url) == TABLES

    downgrade(empty_db_url, "-1")
    assert current_revision(empty_db_url) != head_revision()
    assert _tables(empty_db_url) == set()  # 0001 is the only step: back to empty

    migrate(empty_db_url)
    assert current_revision(empty_db_url) == head_revision()
    assert _tables(empty_db_url) == TABLES


def test_migrated_schema_matches_the_models(empty_db_url):
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    migrate(empty_db_url)
    engine = create_engine_for(empty_db_url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            diffs = compare_metadata(context, Base.metadata)
    finally:
        engine.dispose()
    assert diffs == [], f"models and migrations disagree; add a revision: {diffs}"


def test_concurrent_migrations_from_empty_in_two_processes_both_succeed(empty_db_url, tmp_path):
    """Replicas starting together both migrate; one waits for the other (lock), none fails."""
    # Each child reports ready once imported, then waits for the go-file: both call
    # migrate() at the same moment, however long their imports take.
    script = (
        "import sys, time; from pathlib import Path; from storage import migrate; "
        "Path(sys.argv[2]).touch(); go = Path(sys.argv[3])\n"
        "while not go.exists(): time.sleep(0.005)\n"
        "migrate(sys.argv[1])"
    )
    go = tmp_path / "go"
    ready = [tmp_path / f"ready-{i}" for i in range(2)]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, empty_db_url, str(flag), str(go)],
            stderr=subprocess.PIPE,
            text=True,
        )
        for flag in ready
    ]

    def both_ready() -> bool:
        assert all(p.poll() is None for p in procs), "a migrating child exited before the start"
        return all(flag.exists() for flag in ready)

    wait_until(both_ready, what="both migrating children imported")
    go.touch()
    results = [(p.wait(60), p.stderr.read()) for p in procs]
    assert [rc for rc, _ in results] == [0, 0], results
    assert current_revision(empty_db_url) == head_revision()
    assert _tables(empty_db_url) == TABLES


def test_migrate_is_safe_from_threads_of_one_process(empty_db_url):
    errors: list[BaseException] = []
    barrier = threading.Barrier(2)

    def run() -> None:
        barrier.wait()
        try:
            migrate(empty_db_url)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert current_revision(empty_db_url) == head_revision()


def test_open_registry_migrates_only_a_database_behind_head(empty_db_url, monkeypatch):
    """Every CLI command opens the registry: one at head must not cost an Alembic run."""
    from alembic import command

    from storage import open_registry

    runs = []
    upgrade = command.upgrade
    monkeypatch.setattr(command, "upgrade", lambda *a, **k: (runs.append(a), upgrade(*a, **k)))
    for _ in range(3):
        open_registry(empty_db_url)().close()
    assert len(runs) == 1 and current_revision(empty_db_url) == head_revision()
    assert _tables(empty_db_url) == TABLES
