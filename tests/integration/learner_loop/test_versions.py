"""The registry side of a round: what an unpromoted candidate carries into the next round."""

from __future__ import annotations

import shutil

from learner.examples import Example, save_with_adapter
from learner.versions import carried_examples
from storage import ArtifactStore, register_candidate
from storage.db import open_registry


def _example(i: int, source: str = "thumbs") -> Example:
    return Example(tenant="acme", user=f"u{i}", interaction_id=f"i{i}", stream_id=f"{i}-0",
                   prompt=[{"role": "user", "content": f"q{i}"}], completion=f"a{i}",
                   desirable=True, source=source)


def test_a_candidate_carries_its_newest_own_examples_up_to_the_limit(tmp_path, make_adapter):
    sessions = open_registry(f"sqlite:///{tmp_path / 'registry.db'}")
    artifacts = ArtifactStore(tmp_path / "artifacts")
    adapter = shutil.copytree(make_adapter("carried"), tmp_path / "adapter")
    save_with_adapter([_example(1), _example(2, "replay"), _example(3)], adapter,
                      holdout=[_example(4)])
    published = artifacts.publish(adapter)
    with sessions() as session:
        register_candidate(session, version_id=published.version_id, tenant="acme",
                           base_model="builtin:tiny", artifact_uri=published.uri,
                           artifact_sha256=published.sha256, lora_config=published.lora_config,
                           metrics={"trained_over": "base"})

    carried, source = carried_examples(sessions, artifacts, "acme", None, limit=512)
    assert [e.interaction_id for e in carried] == ["i1", "i3", "i4"]  # replayed ones are not
    assert source == published.version_id
    newest, _ = carried_examples(sessions, artifacts, "acme", None, limit=2)
    assert [e.interaction_id for e in newest] == ["i3", "i4"]
    assert carried_examples(sessions, artifacts, "acme", None, limit=0) == ([], None)
