"""Agreement with the upstream model: when two answers say the same thing.

Used twice. Curation labels the local candidates of a handed-off request that disagree
with the upstream's answer as undesirable (:mod:`learner.distill`), and the gate counts
how often the candidate and the live version agree with the upstream on held-out
handed-off prompts (:func:`handoff_metrics`): the candidate must agree more often.

Two answers agree when their normalised words (lowercased, punctuation and whitespace
dropped) are equal or, with ``how="prefix"`` (``GateConfig.match``'s default, as for the
regression set's rows), when one's words start with the other's: "Paris." agrees with
"paris", with "Paris is the capital of France.", and a greedy answer cut at the token
limit agrees with the full answer it begins. An empty answer agrees with nothing.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from learner.examples import Example, load_from_adapter

Match = Literal["prefix", "exact"]
_WORD = re.compile(r"[^\W_]+")


def words(text: str) -> list[str]:
    """The normalised words of an answer: lowercased runs of letters and digits."""
    return _WORD.findall(text.lower())


def agrees(answer: str, upstream: str, how: Match = "prefix") -> bool:
    """Whether ``answer`` says what ``upstream`` says (see the module docstring)."""
    mine, theirs = words(answer), words(upstream)
    if not mine or not theirs:
        return False
    if how == "exact":
        return mine == theirs
    n = min(len(mine), len(theirs))
    return mine[:n] == theirs[:n]


def handoff_slice(holdout: Sequence[Example], limit: int) -> list[Example]:
    """The held-out handed-off prompts, each with the upstream's answer as its completion:
    the desirable distillation examples of the held-out slice, one per interaction, the
    newest ``limit``."""
    rows: dict[str, Example] = {}
    for example in holdout:
        if example.source == "distill" and example.desirable:
            rows.setdefault(example.interaction_id, example)
    return list(rows.values())[-limit:] if limit else []


def _earlier(parent_dir: str | Path) -> tuple[list[Example], list[Example]]:
    """The live version's held-out examples, and the handed-off prompts its gate judged
    (earlier rounds' that it carried on, then its round's own), oldest first."""
    holdout = load_from_adapter(parent_dir, "holdout")
    rows = [*load_from_adapter(parent_dir, "handoff_slice"), *holdout]
    return holdout, handoff_slice(rows, len(rows))


def earlier_handoffs(parent_dir: str | Path | None, *, trained: set[str],
                     limit: int) -> list[Example]:
    """The held-out handed-off prompts of earlier rounds, for this round's gate: those the
    live version's round held out and those its gate inherited in turn, less any this
    round trains on (``trained``: interaction ids), the newest ``limit``. No version in
    the live line trained on them, so the slice grows round after round even when each
    round holds out only one or two."""
    if parent_dir is None or not limit:
        return []
    kept = [e for e in _earlier(parent_dir)[1] if e.interaction_id not in trained]
    return kept[-limit:]


def held_out_to_teach(parent_dir: str | Path | None, *, slice_limit: int) -> list[Example]:
    """What the live version's round held out that the next round trains on: users'
    feedback (a correction held out for one gate still teaches, one round later), and the
    handed-off answers older than the newest ``slice_limit`` prompts of the gate's handoff
    slice. The newer ones stay held out (:func:`earlier_handoffs`) until newer handoffs
    push them out of the slice."""
    if parent_dir is None:
        return []
    holdout, judged = _earlier(parent_dir)
    staying = {e.interaction_id for e in judged[len(judged) - slice_limit:]} \
        if slice_limit else set()
    taught: dict[tuple, Example] = {}
    for example in [*judged, *holdout]:
        if example.source != "distill" or example.interaction_id not in staying:
            taught.setdefault(example.key, example)
    return list(taught.values())


def handoff_metrics(rows: Sequence[Example], candidate: Sequence[str],
                    reference: Sequence[str], *, how: Match, min_slice: int) -> dict[str, Any]:
    """Agreement of the candidate's and the reference's greedy answers with the upstream's
    on ``rows`` (from :func:`handoff_slice`), and the check's outcome ``handoff_check``:
    ``passed`` when the candidate agrees on more rows than the reference (or on all of
    them: a reference that already agrees everywhere cannot be beaten), ``failed``
    otherwise, ``skipped: ...`` on fewer than ``min_slice`` rows."""
    n = len(rows)
    ours = sum(agrees(a, r.completion, how) for a, r in zip(candidate, rows, strict=True))
    theirs = sum(agrees(a, r.completion, how) for a, r in zip(reference, rows, strict=True))
    metrics: dict[str, Any] = {
        "handoff_slice": n, "handoff_agree_candidate": ours, "handoff_agree_reference": theirs,
        "handoff_agreement_candidate": round(ours / n, 4) if n else None,
        "handoff_agreement_reference": round(theirs / n, 4) if n else None,
    }
    if n == 0:
        metrics["handoff_check"] = "skipped: no handed-off prompts were held out"
    elif n < min_slice:
        metrics["handoff_check"] = (f"skipped: {n} held-out handed-off prompts, fewer than "
                                    f"GateConfig.handoff_min_slice ({min_slice})")
    else:
        metrics["handoff_check"] = "passed" if ours > theirs or ours == n else "failed"
    return metrics


def handoff_reason(metrics: dict[str, Any]) -> str | None:
    """Why the handoff check failed the candidate, or ``None`` when it did not."""
    if metrics.get("handoff_check") != "failed":
        return None
    return (f"handoff slice: the candidate agrees with the upstream model on "
            f"{metrics['handoff_agree_candidate']} of {metrics['handoff_slice']} held-out "
            f"handed-off prompts, the {metrics['reference']} version on "
            f"{metrics['handoff_agree_reference']}; it must agree on more to need the "
            "handoff less")
