"""A promoter process for the race tests (spawned; imported by name, not collected)."""

from __future__ import annotations

import os


def promote_forever(url: str, conn, barrier) -> None:
    """For each ``(version_id, expected_live)`` received: wait at the barrier, promote, report.

    Replies ``(outcome, message)`` with outcome ``ok``, ``conflict`` or ``error``.
    ``None`` ends the loop.
    """
    from storage import Conflict, make_session_factory, promote

    factory = make_session_factory(url)
    actor = f"racer-{os.getpid()}"
    while (job := conn.recv()) is not None:
        version_id, expected = job
        barrier.wait(timeout=60)
        with factory() as session:
            try:
                promote(
                    session,
                    version_id=version_id,
                    expected_live=expected,
                    actor=actor,
                    reason="race",
                )
                conn.send(("ok", ""))
            except Conflict as exc:
                conn.send(("conflict", str(exc)))
            except Exception as exc:
                conn.send(("error", f"{type(exc).__name__}: {exc}"))
    factory.kw["bind"].dispose()
