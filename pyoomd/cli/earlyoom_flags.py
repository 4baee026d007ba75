"""earlyoom compatibility: its flags on ``pyoomd run`` (``pyoomd
migrate-earlyoom`` translates a whole EARLYOOM_ARGS: cli/migrate.py).

Each earlyoom flag keeps its meaning (earlyoom(1)):

  -m/-s/-M/-S     levels (cli/arguments.py, cli/options.py): percent / KiB, KILL defaults to half
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
from typing import TYPE_CHECKING, Any

import yaml

from ..policy.rules import RssOrder  # --sort-by-rss: the rules are light, the loop imports them

if TYPE_CHECKING:
    from ..policy.rules import Loaded


# earlyoom's --prefer / --avoid bonus (kill.c): the same 0..1000 oom_score
# scale as pyoomd's adjust.
EARLYOOM_BONUS = 300
FLAG_SOURCE = "<earlyoom flags>"


def add_earlyoom_flags(p: argparse.ArgumentParser) -> None:
    """earlyoom's flags beyond -m/-s/-M/-S/--dryrun (which cli/arguments.py defines)."""
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
    from ..policy.load import Finding, check_text

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
    from ..policy.rules import PolicySet

    rules, warnings = _flag_result(args)
    if rules:
        loaded.policy = PolicySet(loaded.policy.rules + tuple(rules), loaded.policy.files + (FLAG_SOURCE,))
        loaded.loaded.append(FLAG_SOURCE)
        loaded.warnings.extend(warnings)  # the daemon logs each as a policy_warning event
    if getattr(args, "sort_by_rss", None):
        loaded.policy = RssOrder(loaded.policy)  # type: ignore[assignment]  # same interface
    return loaded
