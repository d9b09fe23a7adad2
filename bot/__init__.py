"""bot: the live path. Platform adapters -> core -> serving.

``bot.core`` is platform-neutral (events, conversation context, roles, feedback,
commands); ``bot.platforms.*`` only translate between a platform and core events.
``bot`` never imports ``learning``: they meet in the database and the adapter store.
"""
