"""learning: the offline loop that turns conversations into a better adapter.

anonymize -> clean -> dataset snapshot -> train -> evaluate -> gate -> await
approval. It reads and writes the database (``storage``) and the adapter store on
disk, and may use ``serving`` to load models; it never imports ``bot``: the two
meet only in the database and the adapter store.
"""
