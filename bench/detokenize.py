"""Detokenizer cost: µs per token at 100/1,000/2,000 tokens, full re-decode ÷ incremental.

One run streams the same multilingual answer (``tests/support/text.py``: accents,
CJK, emoji, so byte-level tokens split characters) token by token through
``serving.engines.textstream.TextStream`` and through the naive loop it
replaced, which re-decodes the whole answer for every token; both must give the
same text. Every figure comes with its ratio against that baseline:

    python bench/detokenize.py [--tokenizer tiny|smollm2|DIR] [--lengths 100 1000 2000]
                               [--stop STR ...] [--rounds 5] [--json out.json]
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from report import bench_parser, run_script  # noqa: E402

from serving.engines.textstream import TextStream  # noqa: E402
from tests.support.text import multilingual_ids, smollm2_tokenizer  # noqa: E402

#: (tokenizer, ids, stop strings) -> the text streamed to the client.
Detokenizer = Callable[[object, Sequence[int], Sequence[str]], str]


def full_redecode(tokenizer, ids: Sequence[int], stop: Sequence[str]) -> str:
    """The baseline: decode everything so far for every token, hold back max(stop)-1 chars."""
    holdback = max((len(s) for s in stop), default=1) - 1
    released = 0
    text = ""
    for k in range(1, len(ids) + 1):
        text = tokenizer.decode(ids[:k], skip_special_tokens=True)
        hits = [i for i in (text.find(s, max(0, released - holdback)) for s in stop) if i >= 0]
        if hits:
            return text[: min(hits)]
        safe = len(text) - holdback if stop else len(text)
        while safe > released and text[safe - 1] == "\ufffd":
            safe -= 1
        released = max(released, safe)
    return text


def incremental(tokenizer, ids: Sequence[int], stop: Sequence[str]) -> str:
    stream = TextStream(tokenizer, stop)
    parts = []
    for token in ids:
        parts.append(stream.add([token]))
        if stream.stopped:
            break
    parts.append(stream.flush())
    return "".join(parts)


def us_per_token(detokenize: Detokenizer, tokenizer, ids, stop, rounds: int) -> tuple[float, str]:
    """Median µs per token of ``detokenize`` over ``rounds`` runs, and the text it gave."""
    times, text = [], ""
    for _ in range(rounds):
        start = time.perf_counter()
        text = detokenize(tokenizer, ids, stop)
        times.append(time.perf_counter() - start)
    return statistics.median(times) / len(ids) * 1e6, text


def load_tokenizer(name: str, data_dir: str | None):
    if name == "smollm2":
        return smollm2_tokenizer()
    from transformers import AutoTokenizer

    if name == "tiny":
        from loraloop.tiny_model import ensure_tiny_model

        name = str(ensure_tiny_model(Path(data_dir or tempfile.mkdtemp())))
    return AutoTokenizer.from_pretrained(name)


def main(args) -> dict:
    tokenizer = load_tokenizer(args.tokenizer, args.data_dir)
    stop = tuple(args.stop)
    all_ids = multilingual_ids(tokenizer, max(args.lengths))
    incremental(tokenizer, all_ids[:50], stop)  # warm-up
    rows = {}
    for n in sorted(args.lengths):
        ids = all_ids[:n]
        naive, expected = us_per_token(full_redecode, tokenizer, ids, stop, args.rounds)
        new, text = us_per_token(incremental, tokenizer, ids, stop, args.rounds)
        if text != expected:
            raise SystemExit(f"at {n} tokens the incremental text differs from the full decode")
        rows[str(n)] = {
            "full_redecode_us_per_token": round(naive, 2),
            "incremental_us_per_token": round(new, 2),
            "ratio_full_over_incremental": round(naive / new, 1),
        }
    return {"tokenizer": args.tokenizer, "stop": list(stop), "rounds": args.rounds, "tokens": rows}


def parse_args(argv=None):
    parser = bench_parser(__doc__)
    parser.add_argument("--tokenizer", default="tiny", help="tiny, smollm2 or a tokenizer dir")
    parser.add_argument("--data-dir", default=None, help="where to build the tiny model")
    parser.add_argument("--lengths", type=int, nargs="+", default=[100, 1000, 2000])
    parser.add_argument(
        "--stop",
        action="append",
        default=None,
        help="a stop string (repeatable; default: a chat turn marker, not in the text)",
    )
    parser.add_argument("--rounds", type=int, default=5, help="runs per figure (median)")
    args = parser.parse_args(argv)
    if args.stop is None:
        args.stop = ["\n<|user|>"]
    return args


if __name__ == "__main__":
    run_script(main, parse_args)
