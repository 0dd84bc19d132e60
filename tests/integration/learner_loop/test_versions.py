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


def test_what_the_live_version_held_out_teaches_the_next_round(tmp_path, make_adapter):
    """Users' held-out feedback is trained one round later (it was lost once its round went
    live); held-out handed-off answers stay for the gate's handoff slice until newer ones
    push them out of it, then they teach too."""
    sessions = open_registry(f"sqlite:///{tmp_path / 'registry.db'}")
    artifacts = ArtifactStore(tmp_path / "artifacts")
    live_dir = shutil.copytree(make_adapter("live"), tmp_path / "live")
    handoffs = [_example(i, "distill") for i in (5, 6, 7)]
    save_with_adapter([_example(1)], live_dir, holdout=[_example(2), handoffs[2]],
                      handoff_slice=handoffs[:2])
    carried, source = carried_examples(sessions, artifacts, "acme", None, limit=512,
                                       live_dir=live_dir, slice_limit=2)
    assert source is None  # no candidate: all of it is the live version's
    # i6 and i7 are the gate's two newest handed-off prompts: they stay held out.
    assert [e.interaction_id for e in carried] == ["i5", "i2"]
    everything, _ = carried_examples(sessions, artifacts, "acme", None, limit=512,
                                     live_dir=live_dir, slice_limit=64)
    assert [e.interaction_id for e in everything] == ["i2"]
