"""The error tree of ``learning``.

::

    LearningError
    ├── TrainingError        the trainer could not produce an adapter
    ├── EvaluationError      a candidate could not be evaluated
    ├── WorkerError          the training process died or reported a failure
    ├── CycleError           a learning cycle could not run (setup, data, registry)
    ├── TrainConfigError     a hyperparameter is out of range (also a ValueError)
    ├── LockError            the learner lock (learning.lock)
    │   └── LockBusy         another learner holds it (with require=True)
    ├── SchedulerError       an invalid schedule (learning.scheduler)
    ├── CanaryPolicyError    an invalid canary policy (learning.canary_monitor)
    ├── AnonymizeError       the anonymizer (learning.anonymize)
    │   ├── ModelNotAvailableError   a configured spaCy model is not installed
    │   ├── UnsupportedLanguageError a language the anonymizer does not know (ValueError)
    │   └── RecordError              a malformed JSONL input record (ValueError)
    ├── SnapshotError        a dataset snapshot could not be built or read (learning.snapshot)
    └── EvalSetError         an invalid eval item or import line (learning.evalset; ValueError)

Every error the package raises on purpose derives from :class:`LearningError`
(``tests/learning/test_errors.py`` checks it). Foreign errors (torch, transformers,
trl, SQLAlchemy) are mapped at the boundary with ``raise ...Error(...) from exc``.
Each subclass lives beside the code that raises it.
"""

from __future__ import annotations


class LearningError(Exception):
    """Something in the learning loop failed; the message says what."""


class TrainingError(LearningError):
    """The trainer could not produce an adapter."""


class EvaluationError(LearningError):
    """A candidate could not be evaluated."""


class WorkerError(LearningError):
    """The training process died or reported a failure."""


class CycleError(LearningError):
    """A learning cycle could not run."""
