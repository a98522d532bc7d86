"""The automation engine: rules (trigger -> conditions -> actions) over the event bus.

Kept import-light on purpose: ``config`` validates rules through ``rules.schema`` from ``aiwgctl config check``,
which must not pay for the engine, SQLite or subprocess machinery. Import ``rules.engine`` for the subsystem.
"""
