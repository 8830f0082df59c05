"""Routing policies as small plugins (STYLE.md, "Routing"; llm-d's scheduler shape).

A profile runs filters, then weighted scorers, then a picker, over `WorkerView` snapshots
(never live clients), timing every plugin. `base.py` holds the shapes, one plugin a file, and
`profiles.py` the named profiles a config chooses from.
"""
