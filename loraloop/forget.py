"""`loraloop users forget USER`: the user's data out of Redis, SQL and future training.

In this order, so that nothing new picks the data up half way:

1. Redis (:func:`feedback.forget.forget_user`): interactions, feedback, dead letters,
   rating and rate-limit keys; deleted entries are acknowledged;
2. the versions whose dataset holds the user's entries (the ledger);
3. SQL (:func:`storage.forget_queries.forget_dataset_user`): the ledger rows are
   anonymized and their stream ids, with those just deleted from Redis, recorded as
   forgotten, which every later round leaves out of replay and carry-over;
4. the versions that *replayed* the data (:func:`learner.forgetting.versions_holding`);
5. with ``retire``: every listed version that may be retired is; a live one is left to
   the operator (retiring it would leave the tenant without a live version), with the
   command that replaces it.

Published artifacts are immutable and keep their ``training_examples.json``; a
retired version is never served nor replayed again, and deleting its artifact is the
operator's call.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

#: Statuses a forget may retire (storage.states: these may move to retired).
RETIRABLE = ("gated", "canary", "rolled_back")


@dataclass
class ForgetReport:
    """What one forget did, everywhere."""

    redis: Any  #: feedback.forget.ForgetSummary
    direct: list  #: versions whose dataset held the user's entries
    replayed: list  #: versions that replayed them
    sql_rows_anonymized: int = 0
    forgotten_stream_ids: list[str] = field(default_factory=list)
    retired: list[str] = field(default_factory=list)
    left: dict[str, str] = field(default_factory=dict)  #: version id -> what to do about it

    @property
    def versions(self) -> list:
        return [*self.direct, *self.replayed]

    def as_dict(self) -> dict[str, Any]:
        def row(v, how: str) -> dict:
            return {"id": v.id, "tenant": v.tenant, "status": v.status, "how": how}

        return {**self.redis.as_dict(),
                "trained_versions": [row(v, "dataset") for v in self.direct]
                + [row(v, "replay") for v in self.replayed],
                "sql_rows_anonymized": self.sql_rows_anonymized,
                "forgotten_stream_ids": self.forgotten_stream_ids,
                "retired": self.retired, "left": self.left}


def _redis(redis_url: str, prefix: str, user: str):
    from feedback.connections import async_client
    from feedback.forget import forget_user
    from feedback.keys import RedisKeys

    async def run():
        client = async_client(redis_url, timeout_s=10)
        try:
            return await forget_user(client, RedisKeys(prefix), user)
        finally:
            await client.aclose()

    return asyncio.run(run())


def forget_everywhere(*, user: str, redis_url: str, redis_prefix: str, artifacts_location: str,
                      ops, retire: bool) -> ForgetReport:
    """Forget ``user`` (the raw name) as the module says; ``ops`` is a
    ``storage.RegistryOps`` acting as the operator."""
    from learner.forgetting import versions_holding
    from storage import ArtifactStore, versions_trained_on
    from storage.forget_queries import forget_dataset_user

    summary = _redis(redis_url, redis_prefix, user)
    with ops.sessions() as session:
        direct = versions_trained_on(session, user=summary.user,
                                     stream_ids=summary.feedback_stream_ids)
    with ops.sessions() as session:
        rows = forget_dataset_user(session, user=summary.user,
                                   stream_ids=summary.feedback_stream_ids, actor=ops.actor,
                                   reason="users forget")
    direct, replayed = versions_holding(
        ops.sessions, ArtifactStore(artifacts_location), user=summary.user,
        stream_ids=rows.stream_ids, direct=direct)
    report = ForgetReport(summary, direct, replayed, rows.anonymized, rows.stream_ids)
    for version in report.versions:
        if version.status == "live":
            report.left[version.id] = (
                f"live for {version.tenant}: promote or roll back to a version without "
                f"this user's data, then `loraloop adapters retire {version.id}`")
        elif version.status in RETIRABLE and retire:
            ops.retire(version.id, reason="trained on a forgotten user's data")
            report.retired.append(version.id)
        elif version.status in RETIRABLE:
            report.left[version.id] = f"`loraloop adapters retire {version.id}` (or --retire)"
    return report
