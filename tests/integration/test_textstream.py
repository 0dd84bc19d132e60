"""Incremental detokenization: no partial characters, stop sequences cut identically."""

from __future__ import annotations

import pytest

from serving.engines.textstream import TextStream


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


def _feed(stream: TextStream, ids: list[int]) -> list[str]:
    deltas = [stream.add([i]) for i in ids]
    return [*deltas, stream.flush()]


def test_multibyte_characters_are_never_split(tokenizer):
    text = "naïve 👍🙂 jalapeño €15"
    ids = tokenizer(text).input_ids
    assert len(ids) > 6
    deltas = _feed(TextStream(tokenizer), ids)
    assert "".join(deltas) == text
    assert not any("\ufffd" in d for d in deltas)


def test_stop_sequence_across_tokens_is_cut_and_never_leaks(tokenizer):
    ids = tokenizer("Hello world, how are you").input_ids
    stream = TextStream(tokenizer, stop=("o w",))
    deltas = _feed(stream, ids)
    assert "".join(deltas) == "Hell"
    assert stream.stopped
    assert stream.text == "Hell"


def test_first_of_several_stops_wins(tokenizer):
    ids = tokenizer("one two three four").input_ids
    deltas = _feed(TextStream(tokenizer, stop=("four", "two")), ids)
    assert "".join(deltas) == "one "


def test_without_a_match_everything_is_released(tokenizer):
    text = "no stop here at all"
    deltas = _feed(TextStream(tokenizer, stop=("zzz",)), tokenizer(text).input_ids)
    assert "".join(deltas) == text
