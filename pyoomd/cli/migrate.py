"""``pyoomd migrate-earlyoom /etc/default/earlyoom``: earlyoom's EARLYOOM_ARGS
as a pyoomd config and policy (each flag as cli/earlyoom_flags.py reads it
on ``pyoomd run``)."""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass, field
from typing import Any

import yaml

from ..errors import ConfigError
from .arguments import build_parser
from .earlyoom_flags import name_only_warnings, policy_doc
from .options import overrides_from

# Options earlyoom accepts that pyoomd has no use for: (takes a value, why).
IGNORED = {"-d": (False, "debug output: pyoomd logs every decision already"),
           "--debug": (False, "debug output: pyoomd logs every decision already"),
           "-k": (False, "removed in earlyoom 1.2"), "-i": (False, "removed in earlyoom 1.7"),
           "--syslog": (False, "pyoomd logs to stderr (the journal under systemd)"),
           "-w": (True, "pyoomd escalates to SIGKILL after kill.grace (default 5s) instead")}


@dataclass
class Migration:
    args: list[str]
    config: dict[str, Any]
    policy: dict[str, Any] | None
    warnings: list[str] = field(default_factory=list)


def read_earlyoom_args(path: str) -> list[str]:
    """EARLYOOM_ARGS from an /etc/default/earlyoom-style file (sh syntax:
    the last assignment wins, as when it is sourced), split as systemd's
    ``$EARLYOOM_ARGS`` and sh's quote removal split it."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(path, f"cannot read: {e}") from None
    value: str | None = None
    for lineno, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if stripped.startswith("export "):
            stripped = stripped[len("export "):].lstrip()
        if not stripped.startswith("EARLYOOM_ARGS="):
            continue
        try:
            words = shlex.split(stripped, comments=True)
        except ValueError as e:
            raise ConfigError(path, f"cannot parse EARLYOOM_ARGS: {e}", lineno) from None
        value = words[0].split("=", 1)[1] if words else ""
    if value is None:
        raise ConfigError(path, "no EARLYOOM_ARGS= line")
    try:
        return shlex.split(value)
    except ValueError as e:
        raise ConfigError(path, f"cannot split EARLYOOM_ARGS {value!r}: {e}") from None


def _drop_ignored(argv: list[str]) -> tuple[list[str], list[str]]:
    kept, notes = [], []
    it = iter(argv)
    for a in it:
        flag = a.split("=", 1)[0] if a.startswith("--") else a[:2]
        if flag in IGNORED and (a == flag or a.startswith("--")):
            takes_value, why = IGNORED[flag]
            if takes_value and a == flag:
                a += " " + next(it, "")
            notes.append(f"earlyoom's {a} is not carried over: {why}")
            continue
        kept.append(a)
    return kept, notes


def migrate(argv: list[str]) -> Migration:
    """Translate earlyoom's argv to a pyoomd config and policy document."""
    kept, notes = _drop_ignored(argv)
    try:
        args = build_parser().parse_args(["run", *kept])  # prints what is wrong to stderr
    except SystemExit:
        raise ConfigError("EARLYOOM_ARGS", f"not valid as earlyoom flags: {shlex.join(kept)}") from None
    config = _plain(overrides_from(args))
    policy = policy_doc(args)
    if getattr(args, "sort_by_rss", None):
        notes.append("--sort-by-rss has no config key: run `pyoomd run --sort-by-rss` to keep it "
                     "(pyoomd ranks by the kernel's oom_score, which counts RSS and swap, by default)")
    return Migration(kept, config, policy, name_only_warnings(args) + notes)


def _plain(o: Any) -> Any:
    """Overrides as YAML-able values (thresholds as written: 10%, 2048KiB)."""
    from ..settings.amounts import Amount

    if isinstance(o, dict):
        return {k: _plain(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_plain(v) for v in o]
    if isinstance(o, Amount):  # both: earlyoom's -m with -M, the lower wins
        parts = ([f"{o.pct:g}%"] if o.pct is not None else []) + ([f"{o.kib}K"] if o.kib is not None else [])
        return parts[0] if len(parts) == 1 else parts
    return o


def write_migration(m: Migration, source: str, out_dir: str) -> tuple[str, str | None]:
    """config.yaml (and earlyoom.yaml under policies.d/) in ``out_dir``;
    refuses to overwrite."""
    os.makedirs(out_dir, exist_ok=True)
    config = dict(m.config)
    config_path = os.path.join(out_dir, "config.yaml")
    policy_path = None
    head = (f"# Written by `pyoomd migrate-earlyoom {source}` from EARLYOOM_ARGS:\n"
            f"#   {shlex.join(m.args) or '(none)'}\n")
    if m.policy is not None:
        policy_dir = os.path.join(out_dir, "policies.d")
        config["policy_dirs"] = [policy_dir]
        os.makedirs(policy_dir, exist_ok=True)
        policy_path = os.path.join(policy_dir, "earlyoom.yaml")
        notes = "".join(f"# WARNING: {w}\n" for w in m.warnings if "name only" in w)
        _write_new(policy_path, head + notes + yaml.safe_dump(m.policy, sort_keys=False))
    _write_new(config_path, head + (yaml.safe_dump(config, sort_keys=False) if config else "{}\n"))
    return config_path, policy_path


def _write_new(path: str, text: str) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        raise ConfigError(path, "already exists; not overwriting (choose another --out-dir)") from None
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
