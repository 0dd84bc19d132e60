"""Two processes promote different versions at the same moment: one wins, one conflicts."""

from __future__ import annotations

import multiprocessing

import pytest
from storage_race_worker import promote_forever

import storage

ROUNDS = 50


@pytest.fixture
def racers(registry_url):
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(2)
    pipes, procs = [], []
    for _ in range(2):
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=promote_forever, args=(registry_url, child, barrier), daemon=True)
        proc.start()
        pipes.append(parent)
        procs.append(proc)
    yield pipes
    for pipe, proc in zip(pipes, procs, strict=True):
        pipe.send(None)
        proc.join(10)
        if proc.is_alive():
            proc.kill()


def test_racing_promotions_one_wins_the_other_conflicts_and_both_are_audited(
    session, tenant, new_version, racers
):
    live = None
    for round_ in range(ROUNDS):
        a, b = new_version(), new_version()
        racers[0].send((a.id, live))
        racers[1].send((b.id, live))
        for pipe in racers:
            assert pipe.poll(60), f"round {round_}: a racer did not answer"
        results = [pipe.recv() for pipe in racers]
        outcomes = sorted(r[0] for r in results)
        assert outcomes == ["conflict", "ok"], f"round {round_}: {results}"
        assert not any("locked" in msg for _, msg in results), results

        winner = a if results[0][0] == "ok" else b
        loser = b if winner is a else a
        alias = storage.get_alias(session, tenant=tenant)
        assert alias.version_id == winner.id and alias.revision == round_ + 1
        assert storage.get_version(session, version_id=winner.id).status == "live"
        assert storage.get_version(session, version_id=loser.id).status == "gated"
        audited = {
            (e.version_id, e.outcome)
            for e in storage.history(session, tenant=tenant, limit=10)
            if e.action == "promote" and e.version_id in (a.id, b.id)
        }
        assert audited == {(winner.id, "ok"), (loser.id, "conflict")}, audited
        live = winner.id
    racer_rows = [
        e
        for e in storage.history(session, tenant=tenant, limit=10_000)
        if e.action == "promote" and e.reason == "race" and e.from_status == "gated"
    ]
    assert sorted(e.outcome for e in racer_rows) == ["conflict"] * ROUNDS + ["ok"] * ROUNDS
