"""The ``pyoomd`` command line.

- ``entry``: the console script; ``run`` goes to the light loop
  (pyoomd/loop.py), any other sub-command to ``dispatch``.
- ``dispatch``: parse the flags, run the sub-command, map errors to exit
  codes (pyoomd/errors.py).
- ``arguments``: the flags (argparse); ``earlyoom_flags``: earlyoom's own;
  ``options``: what parsed flags mean (config overrides, Settings, policies).
- ``compile_child``: ``run``'s validation in a short-lived child process.
- the sub-commands: ``commands`` (run, status, migrate-earlyoom, sample,
  check), ``rank``, ``explain``, ``watch``, ``traces`` (replay, record,
  status --dump-trace); ``scoring`` what rank/explain/watch share;
  ``migrate`` earlyoom's EARLYOOM_ARGS as config; ``replay`` the replay
  engine (TRACE.md), with ``replay_model`` (clock, deaths, kill model) and
  ``replay_report``; ``output`` JSON printing.

This package's ``__init__`` imports nothing: the loop is started through
``entry`` and must not import argparse, pydantic or YAML.
"""
