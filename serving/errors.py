"""Errors raised by ``serving``.

::

    ServingError
    ├── ModelLoadError        the model or tokenizer could not be found, fetched or loaded
    ├── PromptTooLong         the prompt cannot fit the context even after dropping history
    ├── EngineBusy            the request queue is full (back-pressure); retry later
    ├── EngineClosed          the engine was shut down
    └── AdapterError          an adapter could not be loaded or activated
        └── AdapterRejected   the adapter failed verification (manifest, checksum, base model)

Foreign errors (torch, transformers, OS) are mapped at the boundary with
``raise ServingError(...) from exc`` so callers only need to know this tree.
A request past its deadline is not an error: it finishes with
``finish_reason="timeout"`` and its partial text.
"""

from __future__ import annotations


class ServingError(Exception):
    """Base class of every error raised by serving."""


class ModelLoadError(ServingError):
    """The model or its tokenizer could not be found, fetched or loaded."""


class PromptTooLong(ServingError):
    """The prompt does not fit in the model's context even with history dropped."""


class EngineBusy(ServingError):
    """The engine's bounded request queue is full."""


class EngineClosed(ServingError):
    """The engine is shut down and accepts no more requests."""


class AdapterError(ServingError):
    """An adapter could not be loaded or activated."""


class AdapterRejected(AdapterError):
    """An adapter failed verification and was not loaded."""
