"""storage: everything chatloop keeps in its database.

SQLAlchemy 2.0 typed models (``storage.models``), engine and session set-up with
sane SQLite pragmas (``storage.db``), Alembic migrations (``storage.migrations``)
and repositories that the bot and the learning loop use (``storage.repositories``).

It imports nothing else of chatloop and knows nothing of models, platforms or
training: it stores what it is given and answers queries.
"""
