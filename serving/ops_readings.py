"""What the ops view reads besides the registry: the learner's status and serving statistics.

``GET /admin/learner/status`` and ``GET /admin/stats`` (:mod:`serving.admin_routes`)
render an :class:`OpsReadings`. Both are read-only and bounded in time: a Redis
that does not answer within :attr:`OpsConfig.redis_timeout_s` is reported in the
answer (``state: unreachable``, or an entry of ``errors``), never waited on and
never turned into a failed request, so a dashboard polling them shows the outage
instead of hanging.

The learner publishes its status as JSON to ``RedisKeys.learner_status`` (with an
expiry) after every step; here it is read back with how old it is and a ``state``:
``running``, ``failing`` (its steps keep failing), ``stale`` (it has not reported for
``learner_stale_after_s``, or ``learner_round_stale_after_s`` within a round: stopped or
stuck), ``missing`` (no learner has reported,
or its report expired), ``unreachable`` (Redis did not answer) or ``unavailable``
(this deployment has no Redis).

Statistics come from the compute ledger (``serving.compute.ledger``: per tenant,
version and strategy, across every ingress: requests, thumbs, compute and handoffs)
and from this ingress's own Prometheus counters (``serving.metrics``: requests by
version since this process started).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import defaultdict
from typing import Any

from pydantic import BaseModel, Field

from feedback.connections import REDIS_ERRORS, async_client, redact_url

logger = logging.getLogger(__name__)
#: Ledger counters summed over strategies into a version's row.
_SUMMED = ("requests", "ups", "downs", "compute_tokens", "handoffs", "upstream_tokens",
           "fallbacks")


class OpsConfig(BaseModel):
    """How the ops readings judge the learner and bound their Redis reads."""

    learner_stale_after_s: float = Field(
        default=120.0, gt=0, description="Between rounds, a learner status older than this "
        "is shown as stale (the learner publishes after every step, a fraction of a second).")
    learner_round_stale_after_s: float = Field(
        default=1800.0, gt=0, description="During a round, a status older than this is "
        "stale: a round publishes only as each phase starts, and training alone can take "
        "minutes on a CPU.")
    redis_timeout_s: float = Field(default=2.0, gt=0, description="Longest a reading waits "
                                   "for Redis before it reports it unreachable.")


class OpsReadings:
    """The learner's status and per-version statistics of one ingress's ``service``
    (a :class:`serving.api.ChatService`; its compute ledger is its Redis access)."""

    def __init__(self, service, config: OpsConfig | None = None) -> None:
        self.service = service
        self.config = config or OpsConfig()

    # -- the learner ---------------------------------------------------------------------
    async def learner_status(self) -> dict[str, Any]:
        """``{"state", "age_s", "status", "error"}``: the learner's last report, and how old."""
        ledger = self.service.ledger
        if ledger is None:
            return _learner("unavailable", error="this deployment has no Redis, where the "
                            "learner publishes its status (set LORALOOP_REDIS_URL)")
        try:
            async with asyncio.timeout(self.config.redis_timeout_s):
                raw = await _get(ledger.redis_url, ledger.keys.learner_status,
                                 self.config.redis_timeout_s)
        except REDIS_ERRORS as exc:  # asyncio.timeout's TimeoutError is an OSError
            return _learner("unreachable", error=f"Redis at {redact_url(ledger.redis_url)} "
                            f"did not answer ({type(exc).__name__}: {exc})")
        if raw is None:
            return _learner("missing", error="no learner has reported in the last hour: "
                            "start one (`loraloop up` runs it; `loraloop learner run`)")
        try:
            status = json.loads(raw)
        except json.JSONDecodeError as exc:
            return _learner("missing", error=f"the learner's status is not JSON: {exc}")
        age = max(0.0, time.time() - float(status.get("updated_at") or 0))
        limit = (self.config.learner_round_stale_after_s if status.get("round")
                 else self.config.learner_stale_after_s)
        state = "stale" if age > limit else "failing" if status.get("failing") else "running"
        return _learner(state, status=status, age_s=round(age, 1))

    # -- statistics ----------------------------------------------------------------------
    async def stats(self) -> dict[str, Any]:
        """Per-version rows from the ledger and this ingress's counters, and any errors."""
        errors: list[str] = []
        versions: list[dict] = []
        ledger = self.service.ledger
        if ledger is None:
            errors.append("no compute ledger: this deployment has no Redis")
        else:
            for tenant in self.tenants():
                try:
                    async with asyncio.timeout(self.config.redis_timeout_s):
                        summary = await ledger.summary(tenant)
                except REDIS_ERRORS as exc:
                    errors.append(f"compute ledger unreachable ({type(exc).__name__}: {exc})")
                    break
                versions += [version_row(tenant, v, s) for v, s in sorted(summary.items())]
        return {"at": time.time(), "versions": versions, "ingress": self.ingress_counts(),
                "errors": errors}

    def tenants(self) -> list[str]:
        """The tenants this ingress serves (``base`` included), from its router."""
        return [name for name in self.service.router.names() if "@" not in name]

    def ingress_counts(self) -> list[dict[str, Any]]:
        """Requests, errors-free answers and abandoned streams by tenant and version,
        counted by this ingress's Prometheus registry since it started."""
        counts: dict[tuple[str, str], dict[str, float]] = defaultdict(lambda: defaultdict(float))
        for family in self.service.metrics.requests.collect():
            for sample in family.samples:
                if not sample.name.endswith("_total"):
                    continue
                labels = sample.labels
                row = counts[(labels["tenant"], labels["adapter_version"])]
                row["requests"] += sample.value
                if labels["status"] == "abandoned":
                    row["abandoned"] += sample.value
        return [{"tenant": t, "version": v, **{k: int(n) for k, n in row.items()}}
                for (t, v), row in sorted(counts.items())]


def version_row(tenant: str, version: str, strategies: dict[str, dict]) -> dict[str, Any]:
    """One version's ledger counters summed over its strategies, with its rates."""
    row: dict[str, Any] = {"tenant": tenant, "version": version}
    for stat in _SUMMED:
        row[stat] = sum(int(s.get(stat, 0)) for s in strategies.values())
    rated = row["ups"] + row["downs"]
    requests = row["requests"]
    row["thumbs_up_rate"] = round(row["ups"] / rated, 4) if rated else None
    row["handoff_rate"] = round(row["handoffs"] / requests, 4) if requests else None
    row["compute_per_request"] = round(row["compute_tokens"] / requests, 2) if requests else None
    row["strategies"] = strategies
    return row


def _learner(state: str, *, status: dict | None = None, age_s: float | None = None,
             error: str | None = None) -> dict[str, Any]:
    return {"state": state, "age_s": age_s, "status": status, "error": error}


async def _get(redis_url: str, key: str, timeout_s: float) -> bytes | None:
    """One GET on a client of its own (closed after): a poll every few seconds is cheap,
    and no client outlives the request's event loop."""
    client = async_client(redis_url, timeout_s=timeout_s, connect_timeout_s=timeout_s)
    try:
        return await client.get(key)
    finally:
        await client.aclose()
