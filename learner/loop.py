"""The learner's rounds: read the feedback stream, curate, train, gate, publish, ack.

Exactly-once effect: a round's stream ids are written in the SQL transaction that
registers its version (``register_candidate(dataset_stream_ids=...)``) and acknowledged
in Redis only after that commit. After a crash anywhere, pending entries are reclaimed;
ids already in a committed snapshot are acknowledged without training. So each feedback
event trains at most one version and none is lost. Entries a round drops on purpose
(superseded, capped, unusable) have no training effect and are acknowledged with it;
handed-off answers over the round's distillation bound stay pending for a later round.

:class:`Learner` has no Ray in it; :mod:`learner.actor` runs it as a detached
Ray actor and ``loraloop learner run`` runs it in the foreground.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import json
import logging
import os
import shutil
import time
from collections import defaultdict
from pathlib import Path

from feedback.connections import async_client
from feedback.distill import current_ratings
from feedback.interactions import join_interactions
from feedback.keys import RedisKeys
from feedback.source import FeedbackSource, SourceConfig, SourceEntry
from learner.agreement import earlier_handoffs
from learner.config import CRASH_POINTS, LearnerConfig
from learner.curate import curate
from learner.distill import rating_pairs, split_entries, tenant_of
from learner.errors import IncompatibleParent, NothingToTrain
from learner.examples import Example, replay_pool, save_with_adapter
from learner.forgetting import without_forgotten
from learner.gate import evaluate, only_regression_failed
from learner.progress import StepReporter
from learner.round_log import remember, round_row
from learner.train import TrainConfig, preload, train_adapter
from learner.triggers import is_due, next_trigger
from learner.versions import auto_promote, carried_examples, live_version
from storage import ArtifactStore, record_gate, register_candidate, trained_stream_ids
from storage.forget_queries import forgotten_stream_ids

__all__ = ["CRASH_POINTS", "Learner", "LearnerConfig"]  # LearnerConfig lives in learner.config
logger = logging.getLogger(__name__)


class Learner:
    """One consumer of the feedback stream that turns it into adapter versions."""

    def __init__(
        self,
        *,
        redis_url: str,
        keys: RedisKeys,
        sessions,
        artifacts: ArtifactStore,
        base_model: str, base_model_name: str,
        work_dir: Path,
        config: LearnerConfig,
        consumer: str = "learner",
        notifier=None,
    ) -> None:
        self.keys = keys
        self.sessions = sessions
        self.artifacts = artifacts
        self.base_model, self.base_model_name = base_model, base_model_name
        self.work_dir = Path(work_dir)
        self.config = config
        self.notifier = notifier
        self.client = async_client(redis_url, timeout_s=10)
        self.source = FeedbackSource(self.client, keys, consumer, SourceConfig(
            block_ms=200, claim_idle_ms=config.claim_idle_ms))
        self._touch_every_s = config.claim_idle_ms / 3000
        self._touched_at = time.monotonic()
        self.waiting: dict[str, SourceEntry] = {}  # stream id -> entry, read, not yet acked
        self.last_round_at = time.monotonic()
        self.last_arrival_at = time.monotonic()  # when the newest waiting entry was read
        self._deferred = 0  # entries a round could not use yet (see due())
        self.status: dict = {"rounds": 0, "last_round": None, "last_version": None}
        self.canary_started = False  # set when a round starts a canary: look at it soon
        self.on_status = None  # async callable(status): publishes progress during a round

    async def start(self) -> None:
        await self.source.ensure_group()
        seconds = await asyncio.to_thread(preload)
        logger.info("learner ready (training stack imported in %.1f s)", seconds)

    async def close(self) -> None:
        await self.client.aclose()

    # -- reading -----------------------------------------------------------------------
    async def poll(self) -> int:
        """Take new and abandoned entries; ack at once those a committed version already has."""
        if self.waiting and time.monotonic() - self._touched_at > self._touch_every_s:
            # Entries wait for a round while pending: keep them from looking abandoned.
            await self.source.touch(list(self.waiting))
            self._touched_at = time.monotonic()
        entries = await self.source.read()
        fresh = [e for e in entries if e.stream_id not in self.waiting]
        if fresh:
            with self.sessions() as session:
                done = trained_stream_ids(session, stream_ids=[e.stream_id for e in fresh])
            if done:  # a previous incarnation committed them but died before acking
                await self.source.ack(sorted(done))
            for entry in fresh:
                if entry.stream_id not in done:
                    self.waiting[entry.stream_id] = entry
                    self.last_arrival_at = time.monotonic()
        self.status["backlog"] = len(self.waiting)
        self.status["next_trigger"] = self.next_trigger()
        return len(fresh)

    def due(self) -> bool:
        """A round is due on a burst of feedback, on a pause after enough of it, or when
        feedback has waited ``max_interval_s`` (:mod:`learner.triggers`)."""
        return is_due(self.config, **self._clock())

    def next_trigger(self) -> dict:
        """What starts the next round, and when (:func:`learner.triggers.next_trigger`)."""
        return next_trigger(self.config, **self._clock(), now=time.time())

    def _clock(self) -> dict:
        now = time.monotonic()
        return {"waiting": len(self.waiting), "deferred": self._deferred,
                "since_round_s": now - self.last_round_at,
                "since_arrival_s": now - self.last_arrival_at}

    async def step(self) -> list[dict]:
        """Poll once and run a round per tenant if one is due."""
        await self.poll()
        if not self.due():
            return []
        self._crash("after_read")
        by_tenant: dict[str, list[SourceEntry]] = defaultdict(list)
        for entry in self.waiting.values():
            by_tenant[tenant_of(entry)].append(entry)
        self._deferred = 0
        reports = [await self.run_round(t, entries) for t, entries in sorted(by_tenant.items())]
        self.last_round_at = time.monotonic()
        self.status["next_trigger"] = self.next_trigger()
        return reports

    # -- a round -----------------------------------------------------------------------
    async def _progress(self, tenant: str, phase: str | None, **detail) -> None:
        """Say what the round is doing now (``None``: no round runs), for `learner status`."""
        if phase is None:
            self.status.pop("round", None)
        else:
            round_ = self.status.get("round") or {"tenant": tenant, "started_at": time.time()}
            self.status["round"] = {**round_, "phase": phase, "phase_at": time.time(), **detail}
        if self.on_status is not None:
            try:
                await self.on_status(self.status)
            except Exception:  # progress reports are a side channel
                logger.debug("could not publish the learner's progress", exc_info=True)

    async def run_round(self, tenant: str, entries: list[SourceEntry]) -> dict:
        try:
            report = await self._run_round(tenant, entries)
        finally:
            await self._progress(tenant, None)
        remember(self.status, round_row(report, [e.stream_id for e in entries]))
        return report

    async def _run_round(self, tenant: str, entries: list[SourceEntry]) -> dict:
        await self._progress(tenant, "reading", events=len(entries))
        timings: dict[str, float] = {}
        clock = time.perf_counter()
        # Forgotten users' data (`users forget`) stays out: entries still held, replay, carry.
        forgotten = await asyncio.to_thread(self._forgotten)
        for entry in [e for e in entries if e.stream_id in forgotten]:
            self.waiting.pop(entry.stream_id, None)  # forget deleted and acked it in Redis
        entries = [e for e in entries if e.stream_id not in forgotten]
        await self.source.touch([e.stream_id for e in entries])  # keep them ours while we work
        rated, distilled = split_entries(entries)
        joined = await join_interactions(self.client, self.keys, rated)

        parent = live_version(self.sessions, tenant)
        parent_dir = None
        if parent is not None:  # warm start, gate reference and replay pool
            parent_dir = await asyncio.to_thread(
                self.artifacts.load, parent.artifact_uri, sha256=parent.artifact_sha256
            )
        carried, carried_from = await asyncio.to_thread(
            carried_examples, self.sessions, self.artifacts, tenant, parent,
            limit=self.config.max_carried, live_dir=parent_dir,
            slice_limit=self.config.gate.handoff_max_slice)
        carried = without_forgotten(carried, forgotten)
        ratings = await current_ratings(self.client, self.keys, rating_pairs(distilled, carried))
        timings["read_s"] = time.perf_counter() - clock

        clock = time.perf_counter()
        config = self.config
        curated = curate(
            joined, tenant=tenant, per_user_cap=config.per_user_cap,
            max_user_share=config.max_user_share, min_users=config.min_round_users,
            holdout_fraction=config.holdout_fraction,
            replay=without_forgotten(replay_pool(parent_dir), forgotten),
            replay_fraction=config.replay_fraction, min_replay=config.min_replay,
            carried=carried, seed=int(time.time()) & 0xFFFF, distill=distilled, ratings=ratings,
            distill_share=config.distill.max_share, distill_rejected=config.distill.max_rejected,
            distill_max_waiting=config.distill.max_waiting)
        earlier = without_forgotten(earlier_handoffs(  # the gate's handoff slice grows
            parent_dir, trained={e.interaction_id for e in curated.train},
            limit=config.gate.handoff_max_slice), forgotten)
        timings["curate_s"] = time.perf_counter() - clock
        report: dict = {
            "tenant": tenant,
            "counts": dict(curated.counts),
            "timings": timings,
            "capped_users": len(curated.capped_users),
        }
        if carried_from:
            report["carried_from"] = carried_from
        consumed = set(curated.consumed_stream_ids)
        self._deferred += len(curated.deferred)  # handed-off answers waiting for room
        if curated.waiting:  # too few users so far: keep every entry for a later round
            report["outcome"] = f"waiting for more feedback: {curated.waiting}"
            self._deferred += len(entries)
            return self._finish(report)
        if not curated.train:
            report["outcome"] = "nothing to train"
            await self._ack(consumed | {e.stream_id for e in entries} - set(curated.deferred))
            return self._finish(report)

        scratch = self.work_dir / f"round-{time.time_ns()}"
        try:
            published = await self._train_gate_publish(tenant, curated, parent, parent_dir,
                                                        scratch, timings, earlier)
            report.update(published)
        except NothingToTrain as exc:  # e.g. only thumbs-down so far: keep them for later
            report["outcome"] = f"waiting for more feedback: {exc.reason}"
            self._deferred += len(entries) - len(curated.deferred)  # this tenant's; others go on
            return self._finish(report)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        clock = time.perf_counter()
        await self._ack(consumed)
        timings["ack_s"] = time.perf_counter() - clock
        return self._finish(report)

    async def _train_gate_publish(self, tenant, curated, parent, parent_dir, scratch: Path,
                                  timings, earlier: list[Example]) -> dict:
        taught = [e for e in curated.train if e.source != "replay"]
        train_config = self.config.train
        verdicts: list[str] = []  # every attempt's gate summary, for the version's metrics
        for attempt in range(self.config.retries + 1):
            await self._progress(tenant, "training", attempt=attempt + 1,
                                 examples=len(curated.train))
            clock = time.perf_counter()
            steps = StepReporter(lambda step, total: self._progress(
                tenant, "training", step=step, steps=total))
            trained, warm_start_note = await self._train(
                curated.train, parent_dir, scratch / f"attempt-{attempt}", train_config, steps)
            timings["train_s"] = timings.get("train_s", 0.0) + time.perf_counter() - clock
            self._crash("after_train")

            await self._progress(tenant, "gate")
            clock = time.perf_counter()
            verdict = await asyncio.to_thread(
                evaluate,
                base_model=self.base_model,
                candidate_dir=trained.adapter_dir,
                reference_dir=parent_dir,
                taught=taught,
                holdout=curated.holdout,
                regression_set=self.config.regression_set,
                config=self.config.gate,
                cache_dir=self.work_dir / "gate-cache",
                base=trained.base,  # training's copy of the base model, not a second load
                earlier_handoffs=earlier,
            )
            trained = dataclasses.replace(trained, base=None)  # a retry loads its own
            timings["evaluate_s"] = timings.get("evaluate_s", 0.0) + time.perf_counter() - clock
            verdicts.append(verdict.metrics["gate"])
            if verdict.passed or not only_regression_failed(verdict) \
                    or attempt == self.config.retries:
                break
            # Training drifted on general knowledge: hold it closer to the base model and
            # step more gently; what it learns less of now, the next round continues.
            logger.info("round for %s: %s; retrying gentler", tenant, verdict.metrics.get("gate"))
            train_config = train_config.model_copy(update={
                "seed": train_config.seed + attempt + 1,
                "anchor_weight": 2 * train_config.anchor_weight,
                "learning_rate": 0.75 * train_config.learning_rate})

        await self._progress(tenant, "publishing")
        clock = time.perf_counter()
        # The round's data travels with the weights: later rounds replay the trained
        # examples, and carry all of it over while this version is not live.
        save_with_adapter(curated.train, trained.adapter_dir, curated.holdout, earlier)
        published = await asyncio.to_thread(self.artifacts.publish, trained.adapter_dir)
        metrics = {**trained.metrics, **verdict.metrics, "train_seconds": trained.seconds,
                   "trained_over": parent.id if parent else "base", "attempts": attempt + 1,
                   "attempt_gates": verdicts}
        if warm_start_note:
            metrics["warm_start_skipped"] = warm_start_note
        with self.sessions() as session:  # the snapshot commits with the version, or not at all
            version = register_candidate(
                session,
                version_id=published.version_id,
                tenant=tenant,
                base_model=self.base_model_name,
                artifact_uri=published.uri,
                artifact_sha256=published.sha256,
                lora_config=published.lora_config,
                # The parent is the version warm-started from (none for a fresh adapter).
                parent_id=parent.id if parent and not warm_start_note else None,
                metrics=metrics,
                dataset_stream_ids=curated.members,
                actor="learner",
                reason=f"round of {curated.counts.get('examples_new', 0)} new and "
                f"{curated.counts.get('carried', 0)} carried examples",
            )
        self._crash("after_commit")
        with self.sessions() as session:
            record_gate(
                session,
                version_id=version.id,
                passed=verdict.passed,
                metrics=metrics,
                actor="learner",
                reason=metrics["gate"],
            )
        outcome = "rejected: " + "; ".join(verdict.reasons) if not verdict.passed else "gated"
        if verdict.passed and verdict.auto_promote != "off":
            outcome = auto_promote(
                self.sessions, tenant=tenant, version_id=version.id,
                policy=verdict.auto_promote, parent=parent,
                canary_fraction=self.config.canary_fraction, notifier=self.notifier)
            if verdict.auto_promote == "canary":
                self.canary_started = True  # the actor looks at it at once
        timings["publish_s"] = time.perf_counter() - clock
        self.status["last_version"] = version.id
        return {"version": version.id, "outcome": outcome, "metrics": metrics}

    # -- helpers -----------------------------------------------------------------------
    async def _ack(self, stream_ids: set[str]) -> None:
        if stream_ids:
            await self.source.ack(sorted(stream_ids))
        for stream_id in stream_ids:
            self.waiting.pop(stream_id, None)

    async def _train(self, examples: list[Example], parent_dir, scratch: Path,
                     config: TrainConfig, progress=None):
        """Train warm-started from ``parent_dir``; fresh if its LoRA shape no longer fits.

        Returns the result and, for a fresh adapter that had a parent, why it was not
        warm-started (the rank or target modules were changed since the parent).
        """
        train = functools.partial(
            train_adapter,
            base_model=self.base_model,
            base_model_name=self.base_model_name,
            examples=examples,
            output_dir=scratch / "adapter",
            config=config,
            progress=progress,
            keep_base=True,  # for the gate
        )
        try:
            return await asyncio.to_thread(train, parent_adapter=parent_dir), ""
        except IncompatibleParent as exc:  # raised before any training
            logger.warning("%s; training a fresh adapter (replay keeps earlier examples)", exc)
            return await asyncio.to_thread(train, parent_adapter=None), str(exc)

    def _forgotten(self) -> set[str]:
        with self.sessions() as session:
            return forgotten_stream_ids(session)

    def _finish(self, report: dict) -> dict:
        self.status["rounds"] += 1
        self.status["last_round"] = {**report, "finished_at": time.time()}
        self.status["backlog"] = len(self.waiting)
        logger.info("learning round for %s: %s", report["tenant"], report.get("outcome"))
        return report

    def _crash(self, point: str) -> None:
        if self.config.crash_at == point:
            logger.error("crashing at %s as configured", point)
            os._exit(17)

    def write_status(self, path: Path) -> str:
        """Write the status to ``path`` (atomically); returns the JSON written."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        text = json.dumps({**self.status, "updated_at": time.time()}, default=str)
        tmp.write_text(text)
        os.replace(tmp, path)
        return text

    async def publish_status(self, text: str, ttl_s: int = 3600) -> None:
        """Put the status in Redis too, for `loraloop learner status` on any host."""
        await self.client.set(self.keys.learner_status, text, ex=ttl_s)
