"""earlyoom compatibility: its flags on ``pyoomd run``, and
``pyoomd migrate-earlyoom /etc/default/earlyoom``.

Each earlyoom flag keeps its meaning (earlyoom(1)):

  -m/-s/-M/-S     levels (handled in cli.py): percent / KiB, KILL defaults to half
  --prefer RE     comm regex (searched, as regexec does): +300 -> rule ``adjust: +300``
  --avoid RE      comm regex: -300 -> rule ``adjust: -300, allow_name_only: true``
  --ignore RE     comm regex: never killed -> rule ``protect: true, allow_name_only: true``
  --ignore-root-user  processes of uid 0 are never killed -> rule ``user: 0, protect``
  --sort-by-rss   the largest VmRSS goes first instead of the highest oom_score
  -g              kill the victim's whole process group -> rule ``kill: group``
  -n              desktop notifications -> ``notify.enabled``
  -N PROG         run PROG after each kill -> ``hooks.post_kill``
  -P PROG         run PROG before each kill (200 ms head start) -> ``hooks.pre_kill``
  -p              niceness -20 (and the realtime I/O class) -> ``raise_priority``
  -r SECONDS      a ``memory_report`` log event every SECONDS (0: none) -> ``report_interval``
  --dryrun        -> ``dry_run``

--avoid and --ignore match on the process name alone, which whoever starts a
process chooses: pyoomd refuses such protecting rules unless they say
``allow_name_only: true``, and warns, recommending an ``exe`` or ``user`` pin.
"""

from __future__ import annotations

import argparse
import os
import shlex
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import yaml

from .errors import ConfigError
from .policy.rules import RssOrder  # --sort-by-rss: the rules are light, the loop imports them

if TYPE_CHECKING:
    from .policy.rules import Loaded

# earlyoom's --prefer / --avoid bonus (kill.c): the same 0..1000 oom_score
# scale as pyoomd's adjust.
EARLYOOM_BONUS = 300
FLAG_SOURCE = "<earlyoom flags>"
# Options earlyoom accepts that pyoomd has no use for: (takes a value, why).
IGNORED = {"-d": (False, "debug output: pyoomd logs every decision already"),
           "--debug": (False, "debug output: pyoomd logs every decision already"),
           "-k": (False, "removed in earlyoom 1.2"), "-i": (False, "removed in earlyoom 1.7"),
           "--syslog": (False, "pyoomd logs to stderr (the journal under systemd)"),
           "-w": (True, "pyoomd escalates to SIGKILL after kill.grace (default 5s) instead")}


def add_earlyoom_flags(p: argparse.ArgumentParser) -> None:
    """earlyoom's flags beyond -m/-s/-M/-S/--dryrun (which cli.py defines)."""
    g = p.add_argument_group("earlyoom compatibility (same meaning as in earlyoom)")
    g.add_argument("--prefer", action="append", metavar="REGEX", help="comm regex: +300 to the score")
    g.add_argument("--avoid", action="append", metavar="REGEX", help="comm regex: -300 (name only: see README)")
    g.add_argument("--ignore", action="append", metavar="REGEX", help="comm regex: never kill (name only)")
    g.add_argument("--ignore-root-user", action="store_true", default=None, help="never kill root's processes")
    g.add_argument("--sort-by-rss", action="store_true", default=None, help="largest RSS first, not oom_score")
    g.add_argument("-g", dest="kill_group", action="store_true", default=None,
                   help="kill the victim's whole process group")
    g.add_argument("-n", dest="notify", action="store_true", default=None, help="desktop notifications")
    g.add_argument("-N", dest="post_kill", metavar="PROG", help="run PROG after each kill (no shell)")
    g.add_argument("-P", dest="pre_kill", metavar="PROG", help="run PROG before each kill (no shell)")
    g.add_argument("-p", dest="raise_priority", action="store_true", default=None,
                   help="raise our priority: niceness -20, realtime I/O class")
    g.add_argument("-r", dest="report_interval", type=float, metavar="SECONDS",
                   help="log a memory report every SECONDS (0: never)")


def earlyoom_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """Config overrides for the flags above."""
    o: dict[str, Any] = {}
    if getattr(args, "notify", None):
        o["notify"] = {"enabled": True}
    hooks = {k: [[getattr(args, k)]] for k in ("pre_kill", "post_kill") if getattr(args, k, None)}
    if hooks:
        o["hooks"] = hooks
    if getattr(args, "raise_priority", None):
        o["raise_priority"] = True
    if getattr(args, "report_interval", None) is not None:
        o["report_interval"] = args.report_interval
    return o


def policy_doc(args: argparse.Namespace) -> dict[str, Any] | None:
    """The policy file (issue 3's YAML language) for the flags; None if none."""
    rules: list[dict[str, Any]] = []
    for i, rx in enumerate(getattr(args, "ignore", None) or ()):
        rules.append({"name": _name("earlyoom-ignore", i), "match": {"comm": rx}, "protect": True,
                      "allow_name_only": True})
    if getattr(args, "ignore_root_user", None):
        rules.append({"name": "earlyoom-ignore-root-user", "match": {"user": 0}, "protect": True})
    for i, rx in enumerate(getattr(args, "prefer", None) or ()):
        rules.append({"name": _name("earlyoom-prefer", i), "match": {"comm": rx}, "adjust": EARLYOOM_BONUS})
    for i, rx in enumerate(getattr(args, "avoid", None) or ()):
        rules.append({"name": _name("earlyoom-avoid", i), "match": {"comm": rx}, "adjust": -EARLYOOM_BONUS,
                      "allow_name_only": True})
    if getattr(args, "kill_group", None):
        # every process (any cgroup path): a group kill needs a pinning matcher
        rules.append({"name": "earlyoom-g", "match": {"cgroup": "/*"}, "kill": "group"})
    return {"version": 1, "rules": rules} if rules else None


def _name(base: str, i: int) -> str:
    return base if i == 0 else f"{base}-{i + 1}"


def name_only_warnings(args: argparse.Namespace) -> list[str]:
    out = []
    for flag in ("avoid", "ignore"):
        for rx in getattr(args, flag, None) or ():
            out.append(f"--{flag} {rx!r} protects by process name only, which whoever starts a process "
                       "chooses (a hog can name itself sshd); kept with allow_name_only: true. Pin it "
                       "instead: add `exe: /usr/bin/PROGRAM` or `user: NAME` to the rule's match and drop "
                       "allow_name_only.")
    return out


def flag_rules(args: argparse.Namespace) -> tuple[Any, ...]:
    """Compiled rules for the flags given to ``pyoomd run`` (after the policy
    files' rules); ConfigError for a bad regex."""
    return _flag_result(args)[0]


def _flag_result(args: argparse.Namespace) -> tuple[tuple[Any, ...], list[Any]]:
    """(rules, warnings) for the flags."""
    from .policy.load import Finding, check_text

    doc = policy_doc(args)
    if doc is None:
        return (), []
    res = check_text(FLAG_SOURCE, yaml.safe_dump(doc, sort_keys=False))
    if res.errors:
        raise res.errors[0]
    pins = [Finding(FLAG_SOURCE, 0, 0, w) for w in name_only_warnings(args)]
    return res.rules, pins


def with_flag_rules(loaded: Loaded, args: argparse.Namespace) -> Loaded:
    """``loaded`` (pyoomd.policy.rules.Loaded) with the flags' rules appended, and
    wrapped for --sort-by-rss; warnings for name-only flags on stderr."""
    from .policy.rules import PolicySet

    rules, warnings = _flag_result(args)
    if rules:
        loaded.policy = PolicySet(loaded.policy.rules + tuple(rules), loaded.policy.files + (FLAG_SOURCE,))
        loaded.loaded.append(FLAG_SOURCE)
        loaded.warnings.extend(warnings)  # the daemon logs each as a policy_warning event
    if getattr(args, "sort_by_rss", None):
        loaded.policy = RssOrder(loaded.policy)  # type: ignore[assignment]  # same interface
    return loaded


# -- migrate-earlyoom ----------------------------------------------------------------
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
    from .cli import build_parser, overrides_from

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
    from .settings.amounts import Amount

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
