"""Errors raised by ``storage``.

::

    StorageError
    ├── DatabaseUnavailable   cannot connect / the database refused the operation
    ├── MigrationError        the schema could not be upgraded or downgraded
    ├── NotFound              a row the caller named does not exist
    └── InvalidTransition     an adapter change the registry's lifecycle forbids

SQLAlchemy and driver errors are mapped at the boundary (``raise ... from exc``).
"""

from __future__ import annotations


class StorageError(Exception):
    """Base class of every error raised by storage."""


class DatabaseUnavailable(StorageError):
    """The database cannot be reached or refused the operation."""


class MigrationError(StorageError):
    """Applying or reverting a migration failed."""


class NotFound(StorageError):
    """A row the caller named does not exist."""


class InvalidTransition(StorageError):
    """An adapter status change that the lifecycle does not allow."""
