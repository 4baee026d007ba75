"""What parsed command-line arguments mean: the config overrides of ``run``'s
flags (earlyoom's among them), the Settings, the config file, the policies.
Shared by the compile child and the one-shot commands."""

from __future__ import annotations

import argparse
import os
from typing import Any

from ..policy.load import Loaded, load_policies
from ..settings.amounts import Amount
from ..settings.load import DEFAULT_CONFIG_PATH, load_config
from ..settings.schema import Settings
from .earlyoom_flags import earlyoom_overrides, with_flag_rules


def _levels(term_kill: tuple[Amount, Amount | None] | None, other: tuple[Amount, Amount | None] | None,
            ) -> dict[str, Amount]:
    """Merge -m (percent) and -M (size) for one resource: where both are
    given the lower value wins at resolve time, as in earlyoom.  KILL
    defaults to half of TERM, as in earlyoom."""
    out: dict[str, Any] = {}
    for which in (term_kill, other):
        if which is None:
            continue
        term, kill = which
        kill = kill or Amount(pct=term.pct / 2 if term.pct is not None else None,
                              kib=term.kib // 2 if term.kib is not None else None)
        for key, val in (("term", term), ("kill", kill)):
            prev = out.get(key)
            out[key] = val if prev is None else Amount(pct=prev.pct if prev.pct is not None else val.pct,
                                                       kib=prev.kib if prev.kib is not None else val.kib)
    return out


def overrides_from(args: argparse.Namespace) -> dict[str, Any]:
    """The config overrides of the flags given (earlyoom's included)."""
    o: dict[str, Any] = {}
    mem = _levels(getattr(args, "mem_pct", None), getattr(args, "mem_size", None))
    swap = _levels(getattr(args, "swap_pct", None), getattr(args, "swap_size", None))
    if mem:
        o["memory"] = mem
    if swap:
        o["swap"] = swap
    if getattr(args, "dry_run", None):
        o["dry_run"] = True
    if getattr(args, "log_format", None):
        o["log_format"] = args.log_format
    if getattr(args, "reader", None):
        o["reader"] = args.reader
    if getattr(args, "grace", None) is not None:
        o["kill"] = {"grace": args.grace}
    if getattr(args, "warn", None) is not None:
        o.setdefault("memory", {})["warn"] = args.warn
    growth = {k: v for k, v in (("enabled", getattr(args, "growth", None)),
                                ("weight", getattr(args, "growth_weight", None)),
                                ("window", getattr(args, "growth_window", None))) if v is not None}
    if growth:
        o["growth"] = growth
    o.update(earlyoom_overrides(args))
    return o


def settings_for(args: argparse.Namespace) -> Settings:
    """The validated config (--config, else the default file if present)
    with the flags' overrides; ConfigError if invalid."""
    path = args.config
    if path is None and os.path.exists(DEFAULT_CONFIG_PATH):
        path = DEFAULT_CONFIG_PATH
    return load_config(path, overrides_from(args))


def load_policies_for(args: argparse.Namespace, settings: Settings) -> Loaded:
    """``--policy DIR|FILE`` (repeatable) replaces the config's policy_dirs;
    a configured directory that does not exist means no policy from it."""
    # with_flag_rules: earlyoom's --prefer/--avoid/--ignore/... as rules
    if getattr(args, "policy", None):
        return with_flag_rules(load_policies(args.policy), args)
    return with_flag_rules(load_policies(settings.policy_dirs, missing_ok=True), args)


def config_path(args: argparse.Namespace) -> str | None:
    """The config file ``settings_for`` reads (None: defaults only)."""
    if getattr(args, "config", None):
        return str(args.config)
    return DEFAULT_CONFIG_PATH if os.path.exists(DEFAULT_CONFIG_PATH) else None
