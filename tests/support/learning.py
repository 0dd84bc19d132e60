"""What the learning tests and ``bench/learning_efficacy.py`` teach and check: the demo's
sets (:mod:`loraloop.demo.sets`), so that what CI asserts is what a user of
`loraloop demo` sees."""

from loraloop.demo.sets import FACTS, GENERAL, Fact, Known

__all__ = ["FACTS", "GENERAL", "Fact", "Known"]
