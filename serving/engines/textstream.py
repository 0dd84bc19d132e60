"""Incremental detokenization with stop sequences, for engines that decode themselves.

Text is released only when it is final: never in the middle of a UTF-8
character (byte-level tokens can split one) and never a prefix of a stop
sequence that the next tokens might complete. So a streamed answer is exactly
the non-streamed one, cut the same way.
"""

from __future__ import annotations

from collections.abc import Sequence

_REPLACEMENT = "\ufffd"


class TextStream:
    """Turns a growing list of token ids into safe text deltas."""

    def __init__(self, tokenizer, stop: Sequence[str] = ()) -> None:
        self._tokenizer = tokenizer
        self._stop = tuple(s for s in stop if s)
        self._holdback = max((len(s) for s in self._stop), default=1) - 1
        self._ids: list[int] = []
        self._text = ""  # everything decoded so far
        self._emitted = 0  # characters of _text already released
        self.stopped = False

    @property
    def text(self) -> str:
        """The text released so far."""
        return self._text[: self._emitted]

    def add(self, token_ids: Sequence[int]) -> str:
        """Add tokens; return the newly released text. Sets ``stopped`` on a stop match."""
        if self.stopped:
            return ""
        self._ids.extend(token_ids)
        text = self._tokenizer.decode(self._ids, skip_special_tokens=True)
        search_from = max(0, self._emitted - self._holdback)
        cut = self._first_stop(text, search_from)
        if cut is not None:
            self.stopped = True
            self._text = text[:cut]
            return self._release(len(self._text))
        self._text = text
        safe = len(text) - self._holdback if self._stop else len(text)
        # Hold back a trailing partial character until its other bytes arrive.
        while safe > self._emitted and text[safe - 1] == _REPLACEMENT:
            safe -= 1
        return self._release(safe)

    def flush(self) -> str:
        """Release everything still held back (the generation has ended)."""
        return self._release(len(self._text))

    def _first_stop(self, text: str, start: int) -> int | None:
        hits = [i for i in (text.find(s, start) for s in self._stop) if i >= 0]
        return min(hits) if hits else None

    def _release(self, upto: int) -> str:
        if upto <= self._emitted:
            return ""
        delta = self._text[self._emitted : upto]
        self._emitted = upto
        return delta
