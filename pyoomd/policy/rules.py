"""The compiled policy the loop runs: ``Rule``, ``PolicySet``, ``Loaded``,
``RssOrder`` (earlyoom's --sort-by-rss), and their plan codec.

Light (stdlib + RE2): the running loop imports this module, never
``pyoomd.policy.load`` (pydantic, YAML), which validates policy files in the
short-lived compile process.  ``loaded_to_plan`` and ``loaded_from_plan``
carry a ``Loaded`` through the compiled plan as JSON, each matcher's value
as its registry entry writes it (``pyoomd.policy.matchers``: patterns as
text, compiled again here; uids already resolved).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from typing import Any

from ..errors import ConfigError
from ..judge.rank import BADNESS_MAX, Verdict
from ..model import ProcInfo
from .matchers import MATCHERS, Matcher


@dataclass(frozen=True, slots=True)
class Finding:
    """A warning (or a refused rule) at file:line:column."""

    file: str
    line: int | None
    column: int | None
    message: str

    def __str__(self) -> str:
        return str(ConfigError(self.file, self.message, self.line, self.column))


@dataclass(frozen=True, slots=True)
class Rule:
    """One compiled rule.  ``match``: (matcher, compiled value) for each
    matcher the rule gives, in registry order."""

    name: str
    file: str
    line: int
    match: tuple[tuple[Matcher[Any], Any], ...] = ()
    adjust: int = 0
    protect: bool = False
    kill_group: bool | None = None
    signal: str | None = None
    grace_s: float | None = None
    kill_cgroup: bool = False  # kill: cgroup (act/cgroup_kill.py)
    # A soft action tried before the kill (act/soft.py): ("run", argv...) or ("restart-unit",).
    action: tuple[str, ...] | None = None

    def matches(self, proc: ProcInfo) -> bool:
        """All given matchers match.  A field we could not read never matches.
        Regexes see bounded texts (pyoomd.regex: the first MATCH_CMDLINE_MAX
        characters of the command line)."""
        return all(m.matches(c, proc) for m, c in self.match)

    def matcher(self, name: str) -> Any:
        """The compiled value of matcher ``name``, or None if not given."""
        return next((c for m, c in self.match if m.name == name), None)

    def effects(self) -> list[str]:
        """What this rule does, in words (for explain)."""
        out = []
        if self.protect:
            out.append("protect")
        if self.adjust:
            out.append(f"adjust {self.adjust:+d}")
        if self.kill_cgroup:
            out.append("kill cgroup")
        elif self.kill_group is not None:
            out.append("kill group" if self.kill_group else "kill process")
        if self.signal:
            out.append(f"signal {self.signal}")
        if self.grace_s is not None:
            out.append(f"grace {self.grace_s:g}s")
        if self.action:
            out.append(f"action {action_text(self.action)}")
        return out


def action_text(action: tuple[str, ...]) -> str:
    """``run ['/usr/bin/x', '-y']`` or ``restart-unit``."""
    return f"run {list(action[1:])}" if action[0] == "run" else action[0]


@dataclass(frozen=True)
class PolicySet:
    """The compiled rules of every file that applies, in load order."""

    rules: tuple[Rule, ...] = ()
    files: tuple[str, ...] = ()

    @property
    def max_bonus(self) -> int:
        """The largest total positive adjust any process can get: every
        positive rule matching at once (the lazy scan's bound)."""
        return min(BADNESS_MAX, sum(r.adjust for r in self.rules if r.adjust > 0))

    def matching(self, proc: ProcInfo) -> list[Rule]:
        return [r for r in self.rules if r.matches(proc)]

    def evaluate(self, proc: ProcInfo) -> Verdict:
        """Adjusts sum; protect wins; for kill, signal and grace the first
        matching rule that sets one decides."""
        hits = self.matching(proc)
        if not hits:
            return Verdict()
        protect = next((r.name for r in hits if r.protect), None)
        first_kill = next((r for r in hits if r.kill_group is not None or r.kill_cgroup), None)
        first_action = next((r for r in hits if r.action), None)
        group = first_kill.kill_group if first_kill is not None else None
        return Verdict(
            adjust=sum(r.adjust for r in hits),
            protect=protect is not None,
            rules=tuple(r.name for r in hits),
            signal=next((r.signal for r in hits if r.signal), None),
            grace_s=next((r.grace_s for r in hits if r.grace_s is not None), None),
            kill_group=bool(group),
            kill_cgroup=first_kill is not None and first_kill.kill_cgroup,
            protect_rule=protect,
            action=first_action.action if first_action is not None else None,
            action_rule=first_action.name if first_action is not None else None,
        )



@dataclass
class Loaded:
    """The policy set plus what to say about it at startup."""

    policy: PolicySet
    loaded: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file, why)
    refused: list[Finding] = field(default_factory=list)
    warnings: list[Finding] = field(default_factory=list)
    missing_dirs: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {
            "policy_files": list(self.loaded),
            "policy_skipped": [{"file": f, "why": w} for f, w in self.skipped],
            "policy_rules": [r.name for r in self.policy.rules],
            "policy": "none" if not self.policy.rules else f"{len(self.policy.rules)} rules",
            "policy_missing": list(self.missing_dirs),
        }


class RssOrder:
    """earlyoom's --sort-by-rss: badness from VmRSS (per mille of RAM, the
    oom_score scale) instead of the kernel's oom_score; policy adjusts still
    add, -1000 processes stay untouchable (rank.score checks that first).

    The lazy scan's bound grows by 1000, since a process with a low
    oom_score_adj can have a small oom_score and a large RSS: every process
    is read, as earlyoom does."""

    def __init__(self, inner: Any, mem_total_kib: int | None = None) -> None:
        self.inner = inner
        self.mem_total_kib = mem_total_kib or max(1, os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 1024)

    def __getattr__(self, name: str) -> Any:  # rules, files, matching: as the inner set
        return getattr(self.inner, name)

    @property
    def max_bonus(self) -> int:
        return int(self.inner.max_bonus) + 1000

    def evaluate(self, proc: Any) -> Any:
        v = self.inner.evaluate(proc)
        rss_score = proc.rss_kib * 1000 // self.mem_total_kib
        return replace(v, adjust=v.adjust + rss_score - proc.oom_score)


# -- the compiled plan (JSON) --------------------------------------------------------
# A rule's plan is flat: its fields, and each matcher under its plan_key
# (None when the rule does not give it: a plan or a trace written before a
# matcher existed still loads).
_FIELDS = tuple(n for n in Rule.__slots__ if n != "match")


def _rule_to_plan(r: Rule) -> dict[str, Any]:
    d: dict[str, Any] = {name: getattr(r, name) for name in _FIELDS[:3]}
    given = dict(r.match)
    for m in MATCHERS:
        d[m.plan_key] = m.to_plan(given[m]) if m in given else None
    for name in _FIELDS[3:]:
        v = getattr(r, name)
        d[name] = list(v) if isinstance(v, tuple) else v
    return d


def _rule_from_plan(d: dict[str, Any]) -> Rule:
    kw: dict[str, Any] = {name: d[name] for name in _FIELDS if name in d}
    if kw.get("action") is not None:
        kw["action"] = tuple(kw["action"])
    match = tuple((m, m.from_plan(d[m.plan_key])) for m in MATCHERS if d.get(m.plan_key) is not None)
    return Rule(match=match, **kw)


def _finding_to_plan(f: Finding) -> list[Any]:
    return [f.file, f.line, f.column, f.message]


def loaded_to_plan(loaded: Loaded) -> dict[str, Any]:
    """A JSON-serialisable form of ``loaded`` (see ``loaded_from_plan``)."""
    policy: Any = loaded.policy
    sort_by_rss = isinstance(policy, RssOrder)
    if sort_by_rss:
        policy = policy.inner
    return {
        "rules": [_rule_to_plan(r) for r in policy.rules],
        "files": list(policy.files),
        "sort_by_rss": sort_by_rss,
        "loaded": list(loaded.loaded),
        "skipped": [list(s) for s in loaded.skipped],
        "refused": [_finding_to_plan(f) for f in loaded.refused],
        "warnings": [_finding_to_plan(f) for f in loaded.warnings],
        "missing_dirs": list(loaded.missing_dirs),
    }


def loaded_from_plan(d: dict[str, Any]) -> Loaded:
    """The ``Loaded`` that ``loaded_to_plan`` described (regexes compiled)."""
    policy: Any = PolicySet(tuple(_rule_from_plan(r) for r in d["rules"]), tuple(d["files"]))
    if d.get("sort_by_rss"):
        policy = RssOrder(policy)
    return Loaded(policy, loaded=list(d["loaded"]), skipped=[(f, w) for f, w in d["skipped"]],
                  refused=[Finding(*f) for f in d["refused"]], warnings=[Finding(*f) for f in d["warnings"]],
                  missing_dirs=list(d["missing_dirs"]))
