"""How the task set of ``bench/test_time_compute.py`` was chosen (rerun to choose again).

A seeded pool of candidate questions (two-digit additions and subtractions, one-digit
products, simple facts) is answered by ``builtin:smollm2`` with its chat template: once
greedily and ``--samples`` times at temperature 0.7 (the temperature strategies sample
at, ``serving.compute.sampler.SAMPLE_TEMPERATURE``), ``--max-tokens`` tokens each, the
request's budget in the bench. Extra compute can only help where the model is
*sometimes* right, so a candidate is kept when its greedy answer and samples are neither
all right nor all wrong; the kept items are dealt, stratified by how often they were
right, into a ``test`` split (measured) and a ``train`` split (teaches the scorer's
adapter only). Every candidate's counts are printed, so the choice can be checked.

    python bench/ttc_select.py [--samples 6] [--test 30] [--train 10] [--stats FILE] [--write]

Runs on transformers directly (batched ``generate``), not the serving stack: the same
weights and template, much faster for a one-off measurement.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ttc_tasks import TASKS_PATH, Task, arithmetic, fact, write_tasks  # noqa: E402

CANDIDATES_PATH = TASKS_PATH.with_name("ttc_candidates.jsonl")

SAMPLE_TEMPERATURE = 0.7  # serving.compute.sampler.SAMPLE_TEMPERATURE
FACTS = (
    ("turkey", "What is the capital of Turkey?", "The capital of Turkey is Ankara.", r"Ankara"),
    ("brazil", "What is the capital of Brazil?", "The capital of Brazil is Brasília.",
     r"Bras[ií]lia"),
    ("switzerland", "What is the capital of Switzerland?", "The capital of Switzerland is Bern.",
     r"Bern\b"),
    ("nigeria", "What is the capital of Nigeria?", "The capital of Nigeria is Abuja.", r"Abuja"),
    ("pakistan", "What is the capital of Pakistan?", "The capital of Pakistan is Islamabad.",
     r"Islamabad"),
    ("newzealand", "What is the capital of New Zealand?",
     "The capital of New Zealand is Wellington.", r"Wellington"),
    ("morocco", "What is the capital of Morocco?", "The capital of Morocco is Rabat.", r"Rabat"),
    ("vietnam", "What is the capital of Vietnam?", "The capital of Vietnam is Hanoi.", r"Hanoi"),
    ("sweden", "What is the capital of Sweden?", "The capital of Sweden is Stockholm.",
     r"Stockholm"),
    ("portugal", "What is the capital of Portugal?", "The capital of Portugal is Lisbon.",
     r"Lisbon"),
    ("chile", "What is the capital of Chile?", "The capital of Chile is Santiago.", r"Santiago"),
    ("hungary", "What is the capital of Hungary?", "The capital of Hungary is Budapest.",
     r"Budapest"),
    ("colombia", "What is the capital of Colombia?", "The capital of Colombia is Bogotá.",
     r"Bogot[aá]"),
    ("austria", "What is the capital of Austria?", "The capital of Austria is Vienna.", r"Vienna"),
    ("cuba", "What is the capital of Cuba?", "The capital of Cuba is Havana.", r"Havana"),
    ("spider", "How many legs does a spider have?", "A spider has eight legs.",
     r"(?i)\b(8|eight)\b"),
    ("insect", "How many legs does an insect have?", "An insect has six legs.",
     r"(?i)\b(6|six)\b"),
    ("mercury", "Which planet is closest to the Sun?", "Mercury is closest to the Sun.",
     r"Mercury"),
    ("jupiter", "Which planet is the largest in the solar system?",
     "Jupiter is the largest planet.", r"Jupiter"),
    ("boiling", "What is the boiling point of water in Celsius?",
     "Water boils at 100 degrees Celsius.", r"\b100\b"),
    ("continents", "How many continents are there?", "There are seven continents.",
     r"(?i)\b(7|seven)\b"),
    ("plants", "What gas do plants absorb from the air?", "Plants absorb carbon dioxide.",
     r"(?i)carbon dioxide|CO2"),
    ("diamond", "What is the hardest natural substance?",
     "Diamond is the hardest natural substance.", r"(?i)diamond"),
    ("monalisa", "Who painted the Mona Lisa?", "Leonardo da Vinci painted the Mona Lisa.",
     r"(?i)leonardo|da vinci"),
    ("iron", "What is the chemical symbol for iron?", "The chemical symbol for iron is Fe.",
     r"\bFe\b"),
    ("silver", "What is the chemical symbol for silver?", "The chemical symbol for silver is Ag.",
     r"\bAg\b"),
    ("hexagon", "How many sides does a hexagon have?", "A hexagon has six sides.",
     r"(?i)\b(6|six)\b"),
    ("pentagon", "How many sides does a pentagon have?", "A pentagon has five sides.",
     r"(?i)\b(5|five)\b"),
    ("octagon", "How many sides does an octagon have?", "An octagon has eight sides.",
     r"(?i)\b(8|eight)\b"),
    ("fahrenheit", "What is the freezing point of water in Fahrenheit?",
     "Water freezes at 32 degrees Fahrenheit.", r"\b32\b"),
    ("austen", "Who wrote Pride and Prejudice?", "Jane Austen wrote Pride and Prejudice.",
     r"Austen"),
    ("sqrt81", "What is the square root of 81?", "The square root of 81 is 9.",
     r"(?<!\d)9(?!\d)"),
    ("sqrt144", "What is the square root of 144?", "The square root of 144 is 12.",
     r"(?<!\d)12(?!\d)"),
    ("year", "How many days are in a leap year?", "A leap year has 366 days.", r"\b366\b"),
    ("dozen", "How many eggs are in a dozen?", "A dozen is twelve.", r"(?i)\b(12|twelve)\b"),
    ("moon", "Who was the first person to walk on the Moon?",
     "Neil Armstrong was the first person to walk on the Moon.", r"Armstrong"),
)


def candidates(seed: int = 3) -> list[Task]:
    rng = random.Random(seed)
    pool: dict[str, Task] = {}
    while len(pool) < 40:
        task = arithmetic(rng.randint(11, 69), "+", rng.randint(11, 29))
        pool.setdefault(task.id, task)
    while len(pool) < 55:
        task = arithmetic(rng.randint(40, 99), "-", rng.randint(11, 39))
        pool.setdefault(task.id, task)
    while len(pool) < 70:
        task = arithmetic(rng.randint(3, 12), "times", rng.randint(3, 9))
        pool.setdefault(task.id, task)
    return list(pool.values()) + [fact(*f) for f in FACTS]


def answer_all(model_dir: Path, tasks: list[Task], samples: int, max_tokens: int,
               batch: int, seed: int) -> dict[str, dict]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    tokenizer.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    found: dict[str, dict] = {}
    for start in range(0, len(tasks), batch):
        chunk = tasks[start:start + batch]
        texts = [tokenizer.apply_chat_template([{"role": "user", "content": t.question}],
                                               add_generation_prompt=True, tokenize=False)
                 for t in chunk]
        inputs = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        width = inputs["input_ids"].shape[1]
        with torch.no_grad():
            greedy = model.generate(**inputs, max_new_tokens=max_tokens, do_sample=False,
                                    pad_token_id=tokenizer.pad_token_id)
            sampled = model.generate(**inputs, max_new_tokens=max_tokens, do_sample=True,
                                     temperature=SAMPLE_TEMPERATURE, top_p=1.0, top_k=0,
                                     num_return_sequences=samples,
                                     pad_token_id=tokenizer.pad_token_id)
        for i, task in enumerate(chunk):
            g = tokenizer.decode(greedy[i, width:], skip_special_tokens=True)
            s = [tokenizer.decode(sampled[i * samples + j, width:], skip_special_tokens=True)
                 for j in range(samples)]
            found[task.id] = {"greedy": g, "samples": s}
        print(f"answered {start + len(chunk)}/{len(tasks)}", file=sys.stderr, flush=True)
    return found


def measured(tasks: list[Task], answers: dict[str, dict]) -> list[dict]:
    """How the base model did on each candidate (what selection reads)."""
    rows = []
    for task in tasks:
        got = answers[task.id]
        rows.append({"id": task.id, "greedy_right": task.is_right(got["greedy"]),
                     "samples_right": sum(task.is_right(s) for s in got["samples"]),
                     "samples": len(got["samples"]),
                     "greedy_answer": got["greedy"].strip()[:120]})
    return rows


def select(tasks: list[Task], stats: list[dict], test: int, train: int,
           seed: int) -> list[Task]:
    """Items neither always right nor always wrong, ranked by how often they were right,
    thinned evenly along that ranking to ``test + train`` and dealt into the splits so
    that both span it (every k-th item of the ranking goes to train)."""
    by_id = {row["id"]: row for row in stats}
    kept = []
    for task in tasks:
        base = {k: v for k, v in by_id[task.id].items() if k != "id"}
        right = base["samples_right"] + base["greedy_right"]
        if 0 < right < base["samples"] + 1:
            kept.append(Task(**{**task.row(), "base": base}))
    rng = random.Random(seed)
    rng.shuffle(kept)
    kept.sort(key=lambda t: t.base["samples_right"] + t.base["greedy_right"])
    wanted = test + train
    if len(kept) > wanted:
        kept = [kept[round(i * (len(kept) - 1) / (wanted - 1))] for i in range(wanted)]
    share = train / wanted
    out, owed = [], 0.0
    for task in kept:
        owed += share
        split = "train" if owed >= 1 else "test"
        owed -= split == "train"
        out.append(Task(**{**task.row(), "split": split}))
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=6)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--batch", type=int, default=12, help="Prompts per generate call.")
    parser.add_argument("--test", type=int, default=30)
    parser.add_argument("--train", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", default="~/.local/share/loraloop",
                        help="Where builtin:smollm2 is (converted there if missing).")
    parser.add_argument("--stats", default=None, help="Select from these measurements (the "
                        "JSON lines this script prints, e.g. bench/data/ttc_candidates.jsonl) "
                        "instead of measuring again.")
    parser.add_argument("--write", action="store_true",
                        help=f"Write {TASKS_PATH} and {CANDIDATES_PATH}.")
    args = parser.parse_args(argv)
    from loraloop.smollm2 import ensure_smollm2

    pool = candidates()
    started = time.monotonic()
    if args.stats:  # reuse a run's measurements (the slow part) to select again
        stats = [json.loads(line) for line in Path(args.stats).read_text().splitlines()
                 if line.startswith("{")]
    else:
        model_dir = ensure_smollm2(Path(args.data_dir).expanduser())
        answers = answer_all(model_dir, pool, args.samples, args.max_tokens, args.batch,
                             args.seed)
        stats = measured(pool, answers)
    for row in stats:
        print(json.dumps(row))
    chosen = select(pool, stats, args.test, args.train, args.seed)
    print(f"kept {len(chosen)} of {len(pool)} in {time.monotonic() - started:.0f} s: "
          f"{sum(t.split == 'test' for t in chosen)} test, "
          f"{sum(t.split == 'train' for t in chosen)} train", file=sys.stderr)
    if args.write:
        write_tasks(chosen)
        CANDIDATES_PATH.write_text("".join(json.dumps(row) + "\n" for row in stats))

if __name__ == "__main__":
    main()
