"""Training examples: one labelled (prompt, completion) pair, and their JSONL form.

An :class:`Example` is what curation produces and what training and the gate
consume. It is *unpaired* (KTO's format): a completion for a prompt, labelled
desirable or not. It remembers where it came from (tenant, hashed user,
interaction, feedback stream id) so a dataset snapshot can be traced back to
the feedback that built it, and a user's data can be found and forgotten.

JSONL: one :meth:`Example.to_dict` object per line (:func:`dump_jsonl`,
:func:`load_jsonl`); unknown keys are refused so a typo is not silently dropped.
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

from learner.errors import InvalidExample

log = logging.getLogger(__name__)

Source = Literal["thumbs", "correction", "distill", "replay"]
SOURCES: tuple[str, ...] = get_args(Source)
_FIELDS = ("tenant", "user", "interaction_id", "stream_id", "prompt", "completion",
           "desirable", "source")


@dataclass(frozen=True)
class Example:
    """One unpaired training example.

    ``prompt`` is the chat as served (a list of ``{"role", "content"}``), the
    completion is the assistant answer that follows it, ``desirable`` its label
    (thumbs up or a user's correction: ``True``; thumbs down or the answer a
    correction replaced: ``False``). ``source`` says how it was made:
    ``"thumbs"``, ``"correction"`` (both halves of a correction), ``"distill"`` (a
    handed-off request: the upstream model's answer desirable, the local candidates
    that disagreed with it undesirable; ``user`` is the user who asked) or
    ``"replay"`` (an earlier round's example mixed in again).
    """

    tenant: str
    user: str
    interaction_id: str
    stream_id: str
    prompt: list[dict[str, str]] = field(hash=False)
    completion: str
    desirable: bool
    source: Source = "thumbs"

    def __post_init__(self) -> None:
        problems = []
        for name in ("tenant", "user", "interaction_id", "stream_id"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                problems.append(f"{name} must be a non-empty string, got {getattr(self, name)!r}")
        if not isinstance(self.completion, str):
            problems.append(f"completion must be a string, got {type(self.completion).__name__}")
        if not isinstance(self.desirable, bool):
            problems.append(f"desirable must be true or false, got {self.desirable!r}")
        if self.source not in SOURCES:
            problems.append(f"source {self.source!r} is invalid: use one of {list(SOURCES)}")
        if not isinstance(self.prompt, list) or not self.prompt:
            problems.append("prompt must be a non-empty list of {role, content} messages")
        else:
            for i, message in enumerate(self.prompt):
                if (not isinstance(message, Mapping)
                        or not isinstance(message.get("role"), str) or not message.get("role")
                        or not isinstance(message.get("content"), str)):
                    problems.append(f"prompt[{i}] must be {{'role': str, 'content': str}}, "
                                    f"got {message!r:.200}")
        if problems:
            raise InvalidExample("invalid example: " + "; ".join(problems))

    @property
    def key(self) -> tuple[str, str, bool]:
        """Identity for de-duplication: the same prompt, completion and label."""
        return (json.dumps(self.prompt, sort_keys=True), self.completion, self.desirable)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (the JSONL line)."""
        data = asdict(self)
        data["prompt"] = [{"role": m["role"], "content": m["content"]} for m in self.prompt]
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Example:
        """Build from :meth:`to_dict` output; ``InvalidExample`` names what is wrong."""
        if not isinstance(data, Mapping):
            raise InvalidExample(f"an example must be a JSON object, got {type(data).__name__}")
        unknown = sorted(set(data) - set(_FIELDS))
        missing = [f for f in _FIELDS if f not in data and f != "source"]
        if unknown or missing:
            raise InvalidExample(f"example has unknown keys {unknown} / lacks keys {missing}; "
                                 f"the keys are {list(_FIELDS)}")
        prompt = data["prompt"]
        if isinstance(prompt, list):
            prompt = [dict(m) if isinstance(m, Mapping) else m for m in prompt]
        return cls(**{**data, "prompt": prompt})

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, separators=(",", ":"))

    @classmethod
    def from_json(cls, line: str | bytes) -> Example:
        try:
            data = json.loads(line)
        except ValueError as exc:
            raise InvalidExample(f"example line is not valid JSON: {exc}") from exc
        return cls.from_dict(data)


def dump_jsonl(examples: Iterable[Example], path: str | Path) -> int:
    """Write examples to ``path``, one JSON object per line; returns how many."""
    count = 0
    with Path(path).open("w", encoding="utf-8") as handle:
        for example in examples:
            handle.write(example.to_json() + "\n")
            count += 1
    return count


def load_jsonl(path: str | Path) -> list[Example]:
    """Read :func:`dump_jsonl` output; ``InvalidExample`` names the bad line."""
    examples = []
    with Path(path).open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                examples.append(Example.from_json(line))
            except InvalidExample as exc:
                raise InvalidExample(f"{path}:{number}: {exc}") from exc
    return examples


#: The examples a version was trained on, published inside its adapter artifact
#: (the store publishes ``.json`` next to the weights, under the same sha256 manifest),
#: so a later round can replay them from storage on any host.
TRAINING_DATA_FILE = "training_examples.json"


def save_with_adapter(examples: Iterable[Example], adapter_dir: str | Path,
                      holdout: Iterable[Example] = (),
                      handoff_slice: Iterable[Example] = ()) -> int:
    """Write a round's training ``examples``, its ``holdout`` and the earlier rounds'
    held-out handed-off prompts its gate also judged on (``handoff_slice``, never trained:
    :func:`learner.agreement.earlier_handoffs`) into ``adapter_dir`` as
    :data:`TRAINING_DATA_FILE`; returns how many training examples."""
    rows = [e.to_dict() for e in examples]
    held = [e.to_dict() for e in holdout]
    inherited = [e.to_dict() for e in handoff_slice]
    text = json.dumps({"examples": rows, "holdout": held, "handoff_slice": inherited},
                      ensure_ascii=False, separators=(",", ":"))
    (Path(adapter_dir) / TRAINING_DATA_FILE).write_text(text, encoding="utf-8")
    return len(rows)


def load_from_adapter(adapter_dir: str | Path, part: str = "examples") -> list[Example]:
    """The examples :func:`save_with_adapter` stored in ``adapter_dir`` (none if it has none):
    ``part="examples"`` the trained ones, ``"holdout"`` the held-out ones,
    ``"handoff_slice"`` the earlier rounds' held-out handed-off prompts."""
    path = Path(adapter_dir) / TRAINING_DATA_FILE
    if not path.exists():  # e.g. an adapter trained outside loraloop
        return []
    try:
        rows = json.loads(path.read_text("utf-8")).get(part, [])
    except (ValueError, AttributeError, TypeError) as exc:
        raise InvalidExample(f"{path} is not a training-data file: {exc}") from exc
    return [Example.from_dict(row) for row in rows]


def replay_pool(parent_dir: str | Path | None) -> list[Example]:
    """Earlier accepted examples: the live version's training set, which holds the
    examples it replayed in turn, so older rounds stay in the pool by ancestry (shuffled
    by the version's directory name, so the same version gives the same order)."""
    if parent_dir is None:
        return []
    examples = load_from_adapter(parent_dir)
    random.Random(Path(parent_dir).name).shuffle(examples)
    return examples
