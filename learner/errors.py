"""Errors of the learner: curation, training and the evaluation gate.

One base class, :class:`LearnerError`; each subclass also inherits the built-in
an ordinary caller would catch (``ValueError`` for bad input or configuration,
``FileExistsError`` for an output directory that is in the way). A gate that
*fails* is not an error: it is a :class:`~learner.gate.GateResult` with
``passed=False`` and its reasons.
"""

from __future__ import annotations


class LearnerError(Exception):
    """Base class of every error raised by ``learner``."""


class InvalidExample(LearnerError, ValueError):
    """An :class:`~learner.examples.Example` (or its JSONL line) is malformed."""


class TenantMismatch(LearnerError, ValueError):
    """Examples of another tenant reached a round; tenants' data never mix."""


class NothingToTrain(LearnerError, ValueError):
    """A round's examples cannot train an adapter (e.g. only thumbs-down); ``reason`` says why.

    The caller records the reason and keeps the examples for a later round or
    rejects them; nothing was written.
    """

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class IncompatibleParent(LearnerError, ValueError):
    """The parent adapter of a warm start does not fit the requested LoRA configuration."""


class OutputDirNotEmpty(LearnerError, FileExistsError):
    """The training output directory already holds files (they would be published too)."""


class InvalidRegressionSet(LearnerError, ValueError):
    """A regression-set JSONL file is missing or has a malformed row."""
