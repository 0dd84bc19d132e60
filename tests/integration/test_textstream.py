"""Incremental detokenization: no partial characters, stop sequences cut identically."""

from __future__ import annotations

import random

import pytest

from serving.engines.textstream import TextStream
from tests.support.text import multilingual_ids
from tests.support.text import smollm2_tokenizer as load_smollm2_tokenizer


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="module")
def smollm2_tokenizer():
    return load_smollm2_tokenizer()


@pytest.fixture(params=["tiny", "smollm2"])
def any_tokenizer(request):
    name = "tokenizer" if request.param == "tiny" else "smollm2_tokenizer"
    return request.getfixturevalue(name)


class _CountingTokenizer:
    """A real tokenizer that counts how many ids it has been asked to decode."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.decoded_ids = 0

    def decode(self, ids, **kwargs):
        self.decoded_ids += len(ids)
        return self.inner.decode(ids, **kwargs)


def _feed(stream: TextStream, ids: list[int]) -> list[str]:
    deltas = [stream.add([i]) for i in ids]
    return [*deltas, stream.flush()]


def _decode(tokenizer, ids: list[int]) -> str:
    return tokenizer.decode(ids, skip_special_tokens=True)


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


def test_two_thousand_tokens_stream_to_the_full_decode(any_tokenizer):
    ids = multilingual_ids(any_tokenizer, 2000)
    assert any("\ufffd" in _decode(any_tokenizer, [i]) for i in ids)  # tokens split characters
    full = _decode(any_tokenizer, ids)
    stream = TextStream(any_tokenizer)
    deltas = _feed(stream, ids)
    assert "".join(deltas) == full
    assert stream.text == full
    # Split characters come out whole (only the flush may hold one that [:2000] cut).
    assert not any("\ufffd" in d for d in deltas[:-1])


def test_each_token_decodes_a_small_window_not_the_whole_answer(tokenizer):
    ids = multilingual_ids(tokenizer, 2000)
    counting = _CountingTokenizer(tokenizer)
    assert "".join(_feed(TextStream(counting), ids)) == _decode(tokenizer, ids)
    # A full re-decode per token reads ~n²/2 = 2,000,000 ids; a window reads a few per token.
    assert counting.decoded_ids < 10 * len(ids)


def test_stops_split_across_tokens_deep_in_a_long_answer(any_tokenizer):
    ids = multilingual_ids(any_tokenizer, 2000)
    full = _decode(any_tokenizer, ids)
    rng = random.Random(12)
    for _ in range(12):
        start = rng.randrange(len(full) // 2, len(full) - 20)
        stop = full[start : start + rng.randint(2, 9)]
        if "\ufffd" in stop:
            continue
        stream = TextStream(any_tokenizer, stop=(stop, "never in the text"))
        released, stopped_at = "", None
        for k, token in enumerate(ids, 1):
            released += stream.add([token])
            if stream.stopped:
                stopped_at = k
                break
        released += stream.flush()
        assert released == full[: full.index(stop)], stop
        assert stream.text == released
        # It stops at the very token that completes the stop sequence, like a full decode.
        assert stop not in _decode(any_tokenizer, ids[: stopped_at - 1])
        assert stop in _decode(any_tokenizer, ids[:stopped_at])


def test_a_stop_completed_by_a_token_that_also_starts_a_character_stops_there(tokenizer):
    # The tiny tokenizer has a token made of "a" and the first byte of "ï".
    ids = tokenizer("naïve").input_ids
    assert _decode(tokenizer, ids[:2]).endswith("\ufffd")
    stream = TextStream(tokenizer, stop=("na",))
    assert stream.add(ids[:1]) == ""
    assert stream.add(ids[1:2]) == ""
    assert stream.stopped
    assert stream.flush() == ""
    assert stream.text == ""


def test_only_a_possible_start_of_a_stop_is_held_back(tokenizer):
    stream = TextStream(tokenizer, stop=("STOP here",))
    assert stream.add(tokenizer("plain text then ").input_ids) == "plain text then "
    assert stream.add(tokenizer("ST").input_ids) == ""  # may become "STOP here"
    assert stream.add(tokenizer("OP h").input_ids) == ""
    assert stream.add(tokenizer("ow").input_ids) == "STOP how"  # it did not
    assert stream.add(tokenizer(" STOP here and more").input_ids) == " "
    assert stream.stopped
    assert stream.text == "plain text then STOP how "


def test_a_stop_made_of_multibyte_characters_split_into_bytes(tokenizer):
    text = "naïve 👍🙂 jalapeño €15"
    ids = tokenizer(text).input_ids
    stream = TextStream(tokenizer, stop=("🙂 jal",))
    assert "".join(_feed(stream, ids)) == "naïve 👍"
    assert stream.stopped
