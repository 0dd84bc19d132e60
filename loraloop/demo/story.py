"""The demo's story, told through the public API of a running stack.

1. Measure the base model on the taught facts (it knows none: they are made up)
   and on general questions it knows.
2. A wave of users asks each fact; a wrong answer gets a thumbs-down and the
   right answer, a right one a thumbs-up. Other users keep chatting all along
   (asking, rating, correcting), so the canary has traffic and the curve has
   thumbs.
3. The learner trains a round, the gate checks it, a canary takes a share of
   the users and the controller promotes it — nobody operates anything. Once a
   new version is live and served, it is measured like the base was.
4. Until the taught accuracy reaches the plan's target with the general set
   holding, the next wave corrects what is still wrong (a rejected round's data
   goes into the next one).
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable

import httpx

from loraloop.demo.client import StackClient
from loraloop.demo.record import Plan, Record
from loraloop.demo.sets import FACTS, GENERAL, Fact, Known

PROBE = "demo-probe"  #: asks the measuring questions; never rates anything
#: Version statuses that end a round without it going live.
NOT_LIVE_ENDS = ("rejected", "rolled_back", "failed")


class Story:
    """Runs a :class:`Plan` against ``client``, writing what happens into ``record``;
    ``on_change()`` is called whenever there is something new to show."""

    def __init__(self, client: StackClient, plan: Plan, record: Record,
                 on_change: Callable[[], None], make_client: Callable[[], StackClient]) -> None:
        self.client, self.plan, self.record = client, plan, record
        self.on_change = on_change
        self.taught: tuple[Fact, ...] = FACTS[: plan.facts]
        self.general: tuple[Known, ...] = GENERAL[: plan.general]
        self.chatter = Chatter(make_client, self, plan.chat_every_s, plan.chat_rate_share)

    # -- the story ------------------------------------------------------------------------
    def run(self) -> str:
        """Tell the story; returns the version the users end up with."""
        self.say("measuring the base model")
        self.measure("base")
        version = "base"
        self.chatter.start()
        try:
            for wave in range(self.plan.max_waves):
                seen = {v["id"] for v in self.client.versions()}
                self.say(f"wave {wave + 1}: users ask the {len(self.taught)} facts and correct "
                         "wrong answers")
                corrections = self.teach(wave)
                self.say(f"wave {wave + 1}: {corrections} corrections sent; the learner takes "
                         "it from here")
                outcome = self.await_round(version, seen, since=self.record.last_feedback_at)
                if outcome == "timeout":
                    self.say("no round ended in time; see the stack's log")
                    break
                if outcome != version:  # a new live version
                    version = outcome
                    self.say(f"{short(version)} is live: measuring it")
                    self.await_served(version)
                    self.measure(version)
                    if self.record.reached(version):
                        break
        finally:
            self.chatter.stop()
        self.refresh_registry()
        return version

    def teach(self, wave: int) -> int:
        """One wave of users asking every taught fact; returns the corrections they sent."""
        corrections = 0
        for i, fact in enumerate(self.taught):
            for c in range(self.plan.correctors):
                user = f"user-{wave}-{i}-{c}"
                corrections += self.ask_and_rate(self.client, fact, user)
        return corrections

    def ask_and_rate(self, client: StackClient, item: Fact | Known, user: str,
                     rates: bool = True) -> bool:
        """A user asks ``item`` and (if ``rates``) rates the answer; returns whether they
        corrected it."""
        answer = client.ask(item.question, user=user)
        self.record.answered(answer.version)
        if not rates:
            self.on_change()
            return False
        right = item.is_right(answer.text)
        correction = None if right else getattr(item, "correction", None)
        client.rate(answer, user=user, up=right, correction=correction)
        self.record.rated(answer.version, right)
        self.on_change()
        return correction is not None

    # -- the learner's side, as seen through the API -----------------------------------
    def await_round(self, live: str, seen: set[str], *, since: float) -> str:
        """Poll the registry until a round ends: the new live version's id, ``live``
        again when the round's version ended without going live, or ``"timeout"``."""
        deadline = time.monotonic() + self.plan.round_timeout_s
        while time.monotonic() < deadline:
            self.refresh_registry()
            current = self.client.live() or "base"
            if current != live:
                self.record.rounds.append({"version": current, "outcome": "live",
                                           "feedback_to_live_s": round(time.time() - since, 1)})
                return current
            ended = next((v for v in self.client.versions()
                          if v["id"] not in seen and v["status"] in NOT_LIVE_ENDS), None)
            if ended is not None:
                self.record.rounds.append({"version": ended["id"], "outcome": ended["status"],
                                           "reason": ended["metrics"].get("gate")})
                self.say(f"round {short(ended['id'])} ended {ended['status']}: "
                         f"{ended['metrics'].get('gate', '')}"[:160])
                return live
            time.sleep(2)
        return "timeout"

    def await_served(self, version: str) -> None:
        """Until the replicas answer the users with ``version`` (they swap it in on the
        alias change)."""
        self.wait_for(lambda: self.client.ask(self.taught[0].question, user=PROBE,
                                              max_tokens=2).version == version, timeout_s=300,
                      what=f"answers from {short(version)}")

    @staticmethod
    def wait_for(condition: Callable[[], bool], *, timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while not condition():
            if time.monotonic() > deadline:
                raise TimeoutError(f"waited {timeout_s:.0f} s for {what}")
            time.sleep(1)

    def refresh_registry(self) -> None:
        self.record.statuses.update({v["id"]: v["status"] for v in self.client.versions()})
        self.record.audit = self.client.audit()
        try:
            status = self.client.learner_status()
        except httpx.HTTPError:
            status = {"state": "unreachable"}
        self.record.learner = learner_words(status)
        self.on_change()

    # -- measuring -----------------------------------------------------------------------
    def measure(self, version: str) -> None:
        """Greedy answers of ``version`` to the taught and the general questions."""
        model = "base" if version == "base" else f"default@{version}"
        # The ingress learns of a new version from the registry a moment after it
        # serves it under the alias (its catalog refreshes in the background).
        self.wait_for(lambda: model in self.client.models(), timeout_s=120,
                      what=f"{model} in /v1/models")

        def right(items) -> list[bool]:
            return [item.is_right(self.client.ask(item.question, user=PROBE, model=model).text)
                    for item in items]

        found = self.record.measure(version, right(self.taught), right(self.general))
        self.say(f"{short(version)}: taught {found.taught_accuracy:.0%}, "
                 f"general {found.general_accuracy:.0%}")

    def say(self, phase: str) -> None:
        self.record.phase = phase
        self.on_change()


class Chatter:
    """Users who keep chatting in the background: one asks a taught or a general question
    every ``every_s`` seconds and, ``rate_share`` of the time, rates the answer like the
    wave's users (most users never rate)."""

    def __init__(self, make_client: Callable[[], StackClient], story: Story,
                 every_s: float, rate_share: float) -> None:
        self.make_client, self.story = make_client, story
        self.every_s, self.rate_share = every_s, rate_share
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, name="demo-chatter", daemon=True)
        self.errors = 0

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(timeout=600)

    def _run(self) -> None:
        pick = random.Random(0)
        items: list[Fact | Known] = [*self.story.taught, *self.story.general]
        client = self.make_client()
        try:
            while not self.stopping.wait(self.every_s):
                user = f"chatter-{pick.randrange(40)}"
                try:
                    self.story.ask_and_rate(client, pick.choice(items), user,
                                            rates=pick.random() < self.rate_share)
                except httpx.HTTPError:  # a 429 under load, a replica swapping: go on
                    self.errors += 1
        finally:
            client.close()


def short(version: str) -> str:
    """A version id as the CLI shows it (its first 12 characters)."""
    return version[:12]


def learner_words(status: dict) -> str:
    """A line on what the learner does now, from ``GET /admin/learner/status``."""
    state = status.get("state", "unknown")
    inner = status.get("status") or {}
    round_ = inner.get("round")
    if round_:
        step = (f" step {round_.get('step', 0)}/{round_['steps']}"
                if round_.get("steps") and round_.get("phase") == "training" else "")
        return f"{state}: round on {round_.get('tenant')}, {round_.get('phase')}{step}"
    return f"{state}: backlog {inner.get('backlog', '?')}"

