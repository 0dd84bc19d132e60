"""Incremental detokenization with stop sequences, for engines that decode themselves.

Text is released only when it is final: never in the middle of a UTF-8
character (byte-level tokens can split one) and never a prefix of a stop
sequence that the next tokens might complete. So a streamed answer is exactly
the non-streamed one, cut the same way.

Each token costs the same however long the answer is: only a small window of
ids is decoded, with the prefix/read offsets that vLLM's and TGI's
detokenizers use. ``ids[prefix:read]`` is text already accounted for, kept
as context because some tokenizers decode a token differently at the start of
a sequence (SentencePiece drops a leading space); the new text is the decode
of ``ids[prefix:]`` minus the decode of ``ids[prefix:read]``. While that
window ends in U+FFFD (an incomplete UTF-8 sequence) the offsets stay put, so
the window grows until the character's last byte arrives.
"""

from __future__ import annotations

from collections.abc import Sequence

_REPLACEMENT = "\ufffd"


class TextStream:
    """Turns a growing list of token ids into safe text deltas."""

    def __init__(self, tokenizer, stop: Sequence[str] = ()) -> None:
        self._tokenizer = tokenizer
        self._stop = tuple(s for s in stop if s)
        self._ids: list[int] = []
        self._prefix = 0  # ids[_prefix:_read] is context, its text already in the stream
        self._read = 0  # ids[_read:] are not yet final (they end mid-character)
        self._prefix_text: str | None = ""  # decode(ids[_prefix:_read]); None: not yet known
        self._held = ""  # final text not released: it may begin a stop sequence
        self._released: list[str] = []
        self.stopped = False

    @property
    def text(self) -> str:
        """The text released so far."""
        return "".join(self._released)

    def add(self, token_ids: Sequence[int]) -> str:
        """Add tokens; return the newly released text. Sets ``stopped`` on a stop match."""
        if self.stopped:
            return ""
        self._ids.extend(token_ids)
        delta, final = self._decode_window()
        if not final:
            # The characters before the incomplete one are final already: a stop
            # sequence they complete stops now, as a full decode would.
            cut = self._first_stop(self._held + delta.rstrip(_REPLACEMENT))
            if cut is not None:
                return self._stop_at(self._held + delta, cut)
            return ""
        self._advance()
        pending = self._held + delta
        cut = self._first_stop(pending)
        if cut is not None:
            return self._stop_at(pending, cut)
        safe = len(pending) - self._partial_stop(pending)
        self._held = pending[safe:]
        return self._release(pending[:safe])

    def flush(self) -> str:
        """Release everything still held back (the generation has ended)."""
        if self.stopped:
            return ""
        delta = ""
        if self._read < len(self._ids):
            delta, _ = self._decode_window()  # a character that never completed: U+FFFD
            self._advance()
        pending, self._held = self._held + delta, ""
        return self._release(pending)

    def _decode_window(self) -> tuple[str, bool]:
        """The text the ids past ``_read`` add, and whether it is final."""
        decode = self._tokenizer.decode
        if self._prefix_text is None:
            window = self._ids[self._prefix : self._read]
            self._prefix_text = decode(window, skip_special_tokens=True)
        text = decode(self._ids[self._prefix :], skip_special_tokens=True)
        delta = text[len(self._prefix_text) :]
        return delta, bool(delta) and not delta.endswith(_REPLACEMENT)

    def _advance(self) -> None:
        """The window's text is in the stream: its new ids become the next context."""
        self._prefix, self._read = self._read, len(self._ids)
        self._prefix_text = None

    def _first_stop(self, text: str) -> int | None:
        hits = [i for i in (text.find(s) for s in self._stop) if i >= 0]
        return min(hits) if hits else None

    def _partial_stop(self, text: str) -> int:
        """Length of the longest suffix of ``text`` that some stop sequence starts with."""
        longest = 0
        for stop in self._stop:
            for size in range(min(len(stop) - 1, len(text)), longest, -1):
                if text.endswith(stop[:size]):
                    longest = size
                    break
        return longest

    def _stop_at(self, pending: str, cut: int) -> str:
        self.stopped = True
        self._held = ""
        return self._release(pending[:cut])

    def _release(self, delta: str) -> str:
        if delta:
            self._released.append(delta)
        return delta
