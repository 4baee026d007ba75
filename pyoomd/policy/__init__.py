"""Policies: who goes first, who never goes, and why.

- ``matchers``: the matcher registry (one entry per ``match:`` key: its
  YAML type, whether it pins identity, compile, match, plan codec, the
  process fact it reads).  Light: the loop imports it.
- ``rules``: the compiled rules the loop runs (``Rule``, ``PolicySet``,
  ``Loaded``, ``RssOrder``) and their plan codec.  Light.
- ``load``: the schema (pydantic, built from the registry), YAML, per-host
  selection, the pinning review, files.  Only the compile child and the
  tools import it.

This package's ``__init__`` imports nothing: importing ``pyoomd.policy.rules``
must not pull in pydantic.
"""
