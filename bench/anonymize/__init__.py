"""``chatloop bench anonymize``: our anonymizer vs Presidio's default, on two test sets.

Modules: :mod:`~bench.anonymize.generated` (presidio-evaluator's generator over templates,
split by template and by person record) with :mod:`~bench.anonymize.templates`,
:mod:`~bench.anonymize.inserted` (real chat with personal values inserted from sources
the recognizers never read), :mod:`~bench.anonymize.score` (type-agnostic scoring, leaked
values) and :mod:`~bench.anonymize.run` (both systems side by side, JSON last line).
Run: ``chatloop bench anonymize`` or ``python -m bench.anonymize``.
"""
