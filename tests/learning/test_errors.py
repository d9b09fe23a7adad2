"""Learning has one error root: every exception class defined in ``learning`` derives from
:class:`learning.errors.LearningError`."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import learning
from learning.errors import LearningError


def _learning_modules() -> list[str]:
    names = [learning.__name__]
    for info in pkgutil.walk_packages(learning.__path__, prefix="learning."):
        names.append(info.name)
    return names


def test_every_learning_exception_derives_from_learning_error() -> None:
    strays: list[str] = []
    for name in _learning_modules():
        module = importlib.import_module(name)
        for attr, value in vars(module).items():
            if (
                inspect.isclass(value)
                and issubclass(value, BaseException)
                and value.__module__ == name
                and not issubclass(value, LearningError)
            ):
                strays.append(f"{name}.{attr}")
    assert strays == []


def test_the_tree_reaches_the_older_roots() -> None:
    from learning.anonymize import AnonymizeError, ModelNotAvailableError
    from learning.evalset import EvalSetError
    from learning.snapshot import SnapshotError

    for error in (AnonymizeError, ModelNotAvailableError, SnapshotError, EvalSetError):
        assert issubclass(error, LearningError)
    assert issubclass(EvalSetError, ValueError)  # callers that catch ValueError still do
