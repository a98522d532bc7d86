"""Who may do what (``threat-model.md``): trust by allow-list from the schema (``fields``, ``trust``), caller
identity (``identity``), the one gate every subsystem asks before it runs, sends, spends or listens
(``gate``), and what counts as a secret (``redact``).

A leaf package: it reads raw JSON, the file system and ``/proc``, and imports no subsystem and not ``config``
(which imports ``redact`` from here), so every layer can ask it.
"""
