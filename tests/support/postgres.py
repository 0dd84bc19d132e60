"""A fresh PostgreSQL database of the registry's schema, for tests that make it unreachable.

The server is the one at 127.0.0.1:5432 (``LORALOOP_TEST_POSTGRES_URL`` overrides it);
when it is unreachable the test is skipped, unless ``CI`` is set: then it fails.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

PG_URL = os.environ.get(
    "LORALOOP_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


@contextmanager
def migrated_database() -> Iterator[str]:
    """The SQLAlchemy URL of a new, migrated database; dropped on exit."""
    import psycopg

    from storage.db import migrate

    admin_url = PG_URL.replace("postgresql+psycopg://", "postgresql://")
    try:
        admin = psycopg.connect(admin_url, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL at {PG_URL} is unreachable in CI: {exc}")
        pytest.skip(f"PostgreSQL at {PG_URL} is unreachable: {exc}")
    name = f"loraloop_test_{uuid.uuid4().hex[:12]}"
    admin.execute(f'CREATE DATABASE "{name}"')
    url = PG_URL.rsplit("/", 1)[0] + f"/{name}"
    try:
        migrate(url)
        yield url
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def port_of(url: str) -> int:
    from sqlalchemy.engine import make_url

    return make_url(url).port or 5432
