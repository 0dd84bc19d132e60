"""Which versions a forgotten user's data trained, replay included, and keeping it out of
later rounds.

A version's training data is its dataset (the ledger: entries it consumed or carried)
plus what it *replayed*: examples of the version that was live when it trained
(``metrics["trained_over"]``), which hold that version's replayed ones in turn. So
replayed data flows only from a version to those trained over it: starting from the
versions whose dataset holds the user, :func:`versions_holding` follows that edge and
reads each descendant's published training data (``training_examples.json``), keeping
the ones that really hold the user's examples.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from collections.abc import Iterable, Sequence

from learner.examples import TRAINING_DATA_FILE, Example
from storage import ArtifactStore, list_versions

log = logging.getLogger(__name__)


def without_forgotten(examples: Sequence[Example], forgotten: set[str]) -> list[Example]:
    """``examples`` less those made from a forgotten feedback stream id."""
    return [e for e in examples if e.stream_id not in forgotten]


def _holds(artifacts: ArtifactStore, version, user: str, stream_ids: set[str]) -> bool:
    """Whether ``version``'s published training data has an example of ``user`` (hashed)
    or of one of ``stream_ids``; ``True`` when it cannot be read (say so, not hide it)."""
    try:
        raw = artifacts.fs.cat_file(f"{version.artifact_uri.rstrip('/')}/{TRAINING_DATA_FILE}")
        data = json.loads(raw)
    except FileNotFoundError:
        return False  # trained outside loraloop: it replayed nothing
    except Exception as exc:  # unreachable store, damaged file: list it, to be checked
        log.warning("could not read the training data of %s (%s); listing it", version.id, exc)
        return True
    rows = [*data.get("examples", []), *data.get("holdout", []),
            *data.get("handoff_slice", [])]
    return any(r.get("user") == user or r.get("stream_id") in stream_ids for r in rows)


def versions_holding(sessions, artifacts: ArtifactStore, *, user: str,
                     stream_ids: Iterable[str], direct: Sequence) -> tuple[list, list]:
    """``(direct, replayed)``: the ``direct`` versions (their dataset holds the user's
    entries) and the versions trained over one holding the user's data whose published
    training data holds it too (replayed), oldest first."""
    wanted = set(stream_ids)
    with sessions() as session:
        every = list_versions(session, limit=1_000_000)
    children = defaultdict(list)
    for version in every:
        over = (version.metrics or {}).get("trained_over")
        if over:
            children[over].append(version)
    holding = {v.id for v in direct}
    frontier = [v.id for v in direct]
    replayed = []
    while frontier:
        for child in children.get(frontier.pop(), []):
            if child.id not in holding and _holds(artifacts, child, user, wanted):
                holding.add(child.id)
                replayed.append(child)
                frontier.append(child.id)
    replayed.sort(key=lambda v: (v.created_at, v.id))
    return list(direct), replayed
