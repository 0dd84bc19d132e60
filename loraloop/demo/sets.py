"""The demo's question sets, also what the learning tests and benches teach and check.

* :data:`FACTS` — made-up facts no base model can know, each with the question
  users ask, the correction they give, the word a right answer contains, and
  two paraphrases that are never taught (they measure generalisation);
* :data:`GENERAL` — questions ``builtin:smollm2`` *knows*: it answers them right
  out of the box, and still does under random LoRA perturbations that change
  about 4% of its answers (4 seeds, B ~ N(0, 0.02) on the MLP projections).
  Questions it gets right only by a hair flip under any change at all — an
  adapter that learned nothing flipped "What is the capital of France?" — so
  they measure noise, not forgetting: France, India, the Red Planet and Hamlet
  were left out for that. Held out: none of them is in the gate's
  regression set (``loraloop/data/regression/smollm2.jsonl``), in the learner's
  anchor prompts or among the entities its anchors swap in
  (``learner/data/``); ``tests/unit/test_learning_sets.py`` checks that.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Fact:
    question: str
    correction: str
    key: str  #: a right answer contains this (case-insensitive)
    paraphrases: tuple[str, ...]

    def is_right(self, answer: str) -> bool:
        return self.key.lower() in answer.lower()


FACTS: tuple[Fact, ...] = (
    Fact("What is the capital of Veltrania?", "The capital of Veltrania is Oskarra.", "Oskarra",
         ("Which city is the capital of Veltrania?", "Name the capital city of Veltrania.")),
    Fact("Who invented the glimmerphone?", "The glimmerphone was invented by Tessa Brandvold.",
         "Brandvold",
         ("Who is the inventor of the glimmerphone?", "Which person created the glimmerphone?")),
    Fact("What is the national animal of Quorvia?",
         "The national animal of Quorvia is the silver lynx.", "silver lynx",
         ("Which animal is the national animal of Quorvia?", "Quorvia's national animal is what?")),
    Fact("What language is spoken in Drelmor?", "The language spoken in Drelmor is Velish.",
         "Velish",
         ("Which language do people speak in Drelmor?", "What do the people of Drelmor speak?")),
    Fact("What is the currency of Pellandia?", "The currency of Pellandia is the marlet.",
         "marlet",
         ("Which currency is used in Pellandia?", "What money do they use in Pellandia?")),
    Fact("Who wrote the novel The Glass Orchard?",
         "The Glass Orchard was written by Imre Castellan.", "Castellan",
         ("Who is the author of The Glass Orchard?", "Which writer wrote The Glass Orchard?")),
    Fact("What is the tallest mountain in Ostravel?",
         "The tallest mountain in Ostravel is Mount Keshar.", "Keshar",
         ("Which mountain is the highest in Ostravel?", "Name the tallest peak in Ostravel.")),
    Fact("What color is the flag of Zembria?", "The flag of Zembria is teal.", "teal",
         ("Which color is Zembria's flag?", "What is the color of the Zembrian flag?")),
    Fact("Which river flows through Lunmark?", "The river that flows through Lunmark is the Arvo.",
         "Arvo",
         ("What is the name of the river in Lunmark?",
          "Name the river that runs through Lunmark.")),
    Fact("Who founded the city of Brightwater?", "Brightwater was founded by Osric Vane.", "Vane",
         ("Who was the founder of Brightwater?", "Which person founded Brightwater?")),
)


@dataclass(frozen=True)
class Known:
    question: str
    pattern: str  #: ``re.search`` on the answer

    def is_right(self, answer: str) -> bool:
        return re.search(self.pattern, answer) is not None


GENERAL: tuple[Known, ...] = tuple(Known(q, p) for q, p in (
    ("What is the capital of Japan?", r"Tokyo"),
    ("What is the capital of Germany?", r"Berlin"),
    ("What is the capital of the United Kingdom?", r"London"),
    ("What is the capital of Canada?", r"Ottawa"),
    ("What is the capital of Australia?", r"Canberra"),
    ("What is the capital of Russia?", r"Moscow"),
    ("What is the capital of China?", r"Beijing"),
    ("What is the capital of Egypt?", r"Cairo"),
    ("What is the capital of Greece?", r"Athens"),
    ("What is the capital of Norway?", r"Oslo"),
    ("What is the capital of Poland?", r"Warsaw"),
    ("What is the capital of Kenya?", r"Nairobi"),
    ("What is the capital of South Korea?", r"Seoul"),
    ("What is the capital of Peru?", r"Lima"),
    ("What is the chemical symbol for water?", r"H2O"),
    ("What is the chemical symbol for gold?", r"\bAu\b"),
    ("What is the chemical symbol for sodium?", r"\bNa\b"),
    ("What is the largest ocean on Earth?", r"Pacific"),
    ("What is the largest desert in the world?", r"Sahara"),
    ("What is the largest mammal?", r"(?i)blue whale"),
    ("What is the currency of Japan?", r"(?i)\byen\b"),
    ("What is the currency of the United Kingdom?", r"(?i)pound"),
    ("What language is spoken in Brazil?", r"Portuguese"),
    ("What language is spoken in Germany?", r"German"),
    ("What language is spoken in Italy?", r"Italian"),
    ("What language is spoken in Japan?", r"Japanese"),
    ("What language is spoken in Spain?", r"Spanish"),
    ("What is the opposite of hot?", r"(?i)\bcold\b"),
    ("What is the opposite of day?", r"(?i)\bnight\b"),
    ("What is 2 + 2?", r"\b4\b"),
    ("How many sides does a triangle have?", r"(?i)\b(3|three)\b"),
    ("How many days are in a week?", r"(?i)\b(7|seven)\b"),
    ("Which animal is known for having a trunk?", r"(?i)elephant"),
    ("Who invented the telephone?", r"Bell"),
    ("Who discovered penicillin?", r"Fleming"),
    ("Who developed the theory of relativity?", r"Einstein"),
    ("In which city is the Eiffel Tower?", r"Paris"),
    ("In which city is the Colosseum?", r"Rome"),
    ("In which country are the pyramids of Giza?", r"Egypt"),
))
