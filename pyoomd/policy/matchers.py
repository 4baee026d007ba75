"""Policy matchers: one registry entry each, every other form derived from it.

A matcher is what a rule's ``match:`` may say about a process.  Its entry in
``MATCHERS`` is the one place that says:

- its YAML key and the type of its value (the pydantic schema of
  ``pyoomd.policy.load`` is built from these),
- whether it pins identity (``pins``): something the process's owner cannot
  choose (a uid, an executable path, a cgroup).  A rule that protects, lowers
  a score or kills more than the victim must use one; the others are
  name-like (``comm``, ``cmdline``, ``parent``, ``cwd``: whoever starts a
  process chooses them),
- how its YAML value is checked and compiled (regexes by RE2, user names
  resolved to uids),
- how it matches a process (``matches``: pure, a fact that could not be read
  never matches),
- how it crosses the compiled plan (JSON between the compile child and the
  loop: ``to_plan``/``from_plan`` under ``plan_key``),
- which process fact it reads (``fact``: a ``ProcInfo`` field), and how the
  snapshot reads that fact when nothing else does (``read``).

Light (stdlib + ``pyoomd.regex``): the running loop imports this module.
"""

from __future__ import annotations

import fnmatch
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import fields
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from ..model import ProcInfo
from ..regex import Pattern, RegexError, bound_cmdline, bound_name, compile_policy_regex, search

if TYPE_CHECKING:
    from ..sense.procfs import Procfs

C = TypeVar("C")
# A user name -> its uid on this host, or None.
Resolver = Callable[[str], "int | None"]
# How the snapshot reads a fact nothing else reads: (procfs, pid) -> value;
# OSError means unreadable (gone, or another user's without CAP_SYS_PTRACE).
Reader = Callable[["Procfs", int], "str | None"]


class Matcher(Generic[C]):
    """One matcher; ``C`` is its compiled value.  Subclasses give the kind
    (regex, globs, users); instances in ``MATCHERS`` give the name and fact."""

    # The YAML value's type (pydantic validates it strictly) and a one-line description.
    yaml_type: Any = str
    what = ""

    def __init__(self, name: str, fact: str, doc: str, *, pins: bool = False, plan_key: str | None = None,
                 read: Reader | None = None) -> None:
        self.name = name
        self.fact = fact  # the ProcInfo field it reads
        self.doc = doc
        self.pins = pins
        self.plan_key = plan_key or name
        self.read = read

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"

    def seen(self, proc: ProcInfo) -> Any:
        """The fact as this matcher sees it (``None``: unreadable)."""
        return getattr(proc, self.fact)

    # -- YAML -> checked value (ValueError: pydantic reports its message) --------------
    def before(self, v: Any) -> Any:
        """The raw YAML value before type validation (a scalar for a list)."""
        return v

    def check(self, v: Any) -> Any:
        return v

    def weakness(self, v: Any) -> list[str]:
        """Warnings when this matcher is the only pin of a protecting rule."""
        return []

    # -- checked value -> compiled; compiled -> match, plan, text -----------------------
    def compile(self, v: Any, resolve: Resolver) -> tuple[C, list[str]]:
        """(compiled value, warnings)."""
        raise NotImplementedError

    def matches(self, c: C, proc: ProcInfo) -> bool:
        raise NotImplementedError

    def to_plan(self, c: C) -> Any:
        raise NotImplementedError

    def from_plan(self, v: Any) -> C:
        raise NotImplementedError

    def show(self, c: C) -> str:
        """The compiled value in words (explain)."""
        return repr(self.to_plan(c))


class RegexMatcher(Matcher[Pattern]):
    """A regex searched (RE2: linear time) in a bounded text."""

    what = "regex, searched (RE2)"

    def __init__(self, name: str, fact: str, doc: str, bound: Callable[[str], str], **kw: Any) -> None:
        super().__init__(name, fact, doc, **kw)
        self.bound = bound

    def seen(self, proc: ProcInfo) -> str | None:
        text = getattr(proc, self.fact)
        return None if text is None else self.bound(text)

    def check(self, v: str | None) -> str | None:
        if v is not None:
            try:
                compile_policy_regex(v)
            except RegexError as e:
                raise ValueError(f"invalid regex {v[:80]!r}: {e}") from None
        return v

    def compile(self, v: str, resolve: Resolver) -> tuple[Pattern, list[str]]:
        return compile_policy_regex(v), []

    def matches(self, c: Pattern, proc: ProcInfo) -> bool:
        text = self.seen(proc)
        return text is not None and search(c, text)

    def to_plan(self, c: Pattern) -> str:
        return str(c.pattern)

    def from_plan(self, v: str) -> Pattern:
        return compile_policy_regex(v)

    def show(self, c: Pattern) -> str:
        return repr(str(c.pattern))


def _as_list(v: Any) -> Any:
    return [v] if isinstance(v, (str, int)) and not isinstance(v, bool) else v


def strip_deleted(path: str | None) -> str | None:
    """A path the kernel shows as ``PATH (deleted)`` (an upgraded binary, a
    removed directory) as PATH: the process was still started from, or
    still works in, PATH."""
    if path is not None and path.endswith(" (deleted)"):
        return path[: -len(" (deleted)")]
    return path


class GlobMatcher(Matcher[tuple[str, ...]]):
    """Absolute paths or globs (``fnmatch``, case-sensitive), one or a list."""

    yaml_type = list[str]
    what = "absolute path or glob, or a list"

    def __init__(self, name: str, fact: str, doc: str, normalize: Callable[[str | None], str | None] = lambda p: p,
                 weak: Callable[[str], str | None] | None = None, **kw: Any) -> None:
        super().__init__(name, fact, doc, **kw)
        self.normalize = normalize
        self.weak = weak

    def seen(self, proc: ProcInfo) -> str | None:
        return self.normalize(getattr(proc, self.fact))

    def before(self, v: Any) -> Any:
        return _as_list(v)

    def check(self, v: list[str] | None) -> list[str] | None:
        for item in v or ():
            if not item.startswith("/"):
                raise ValueError(f"must be an absolute path or glob (starting with /), got {item!r}")
        if v is not None and not v:
            raise ValueError("an empty list matches nothing")
        return v

    def weakness(self, v: list[str]) -> list[str]:
        return [w for g in v if self.weak is not None and (w := self.weak(g)) is not None]

    def compile(self, v: list[str], resolve: Resolver) -> tuple[tuple[str, ...], list[str]]:
        return tuple(v), []

    def matches(self, c: tuple[str, ...], proc: ProcInfo) -> bool:
        value = self.seen(proc)
        return value is not None and any(fnmatch.fnmatchcase(value, g) for g in c)

    def to_plan(self, c: tuple[str, ...]) -> list[str]:
        return list(c)

    def from_plan(self, v: list[str]) -> tuple[str, ...]:
        return tuple(v)


class UserMatcher(Matcher[frozenset[int]]):
    """User names or uids, one or a list; names resolve at load (the plan
    carries uids), an unknown name matches nobody and is warned about."""

    yaml_type = list[int | str]
    what = "user name or uid, or a list"

    def before(self, v: Any) -> Any:
        return _as_list(v)

    def check(self, v: list[int | str] | None) -> list[int | str] | None:
        if v is not None and not v:
            raise ValueError("an empty list matches nothing")
        for u in v or ():
            if isinstance(u, int) and not 0 <= u < 2**32:
                raise ValueError(f"uid out of range: {u}")
            if isinstance(u, str) and not u:
                raise ValueError("empty user name")
        return v

    def compile(self, v: list[int | str], resolve: Resolver) -> tuple[frozenset[int], list[str]]:
        uids: set[int] = set()
        warnings: list[str] = []
        for u in v:
            uid = u if isinstance(u, int) else int(u) if u.isascii() and u.isdigit() else resolve(u)
            if uid is None:
                warnings.append(f"user {u!r} does not exist on this host: that name matches nobody here")
            else:
                uids.add(uid)
        return frozenset(uids), warnings

    def matches(self, c: frozenset[int], proc: ProcInfo) -> bool:
        return proc.uid in c

    def to_plan(self, c: frozenset[int]) -> list[int]:
        return sorted(c)

    def from_plan(self, v: list[int]) -> frozenset[int]:
        return frozenset(v)

    def show(self, c: frozenset[int]) -> str:
        return f"uid {', '.join(map(str, sorted(c)))}"


def _interpreter(glob: str) -> str | None:
    """Programs that run any code they are handed: pinning one of these by
    exe alone protects every user's scripts."""
    if _INTERPRETER.match(os.path.basename(glob)):
        return (f"exe {glob!r} runs whatever script it is given: any user's script would be protected; "
                "pin user or cgroup too")
    return None


_INTERPRETER = re.compile(
    r"^(\*|python[0-9.]*\*?|perl[0-9.]*|ruby[0-9.]*|node(js)?|java|bash|sh|dash|zsh|"
    r"lua[0-9.]*|php[0-9.]*|env|busybox)$")


def _read_cwd(procfs: Procfs, pid: int) -> str | None:
    return procfs.readlink_pid(pid, "cwd")


# The registry.  Order: the order of the schema, of error messages and of
# the plan; a rule matches when every matcher it gives matches.
MATCHERS: tuple[Matcher[Any], ...] = (
    RegexMatcher("comm", "comm", "regex on /proc/PID/comm", bound_name),
    RegexMatcher("cmdline", "cmdline", "regex on the command line (argv joined by spaces)", bound_cmdline),
    GlobMatcher("exe", "exe", "the executable's path (an upgraded binary's `PATH (deleted)` matches PATH)",
                normalize=strip_deleted, weak=_interpreter, pins=True),
    UserMatcher("user", "uid", "the process's real uid", pins=True, plan_key="uids"),
    GlobMatcher("cgroup", "cgroup", "the process's cgroup path", pins=True),
    RegexMatcher("parent", "parent_comm", "regex on the parent's comm", bound_name),
    GlobMatcher("cwd", "cwd", "the working directory (/proc/PID/cwd; a removed one's `PATH (deleted)` "
                "matches PATH)", normalize=strip_deleted, read=_read_cwd),
)
BY_NAME: dict[str, Matcher[Any]] = {m.name: m for m in MATCHERS}
PINNING: tuple[str, ...] = tuple(m.name for m in MATCHERS if m.pins)
NAME_LIKE: tuple[str, ...] = tuple(m.name for m in MATCHERS if not m.pins)
# Facts the snapshot reads only because a matcher needs them (the others,
# comm, cmdline, exe, uid, cgroup, parent_comm, it reads for every detailed process).
READ_FACTS: tuple[tuple[str, Reader], ...] = tuple({m.fact: m.read for m in MATCHERS if m.read is not None}.items())


def words(names: Sequence[str], last: str = "or") -> str:
    """``exe, user or cgroup``."""
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} {last} {names[-1]}"


def _check_facts() -> None:
    have = {f.name for f in fields(ProcInfo)}
    missing = [m.name for m in MATCHERS if m.fact not in have]
    if missing:  # a programming error, caught by the first import in any test
        raise TypeError(f"matchers {missing} read facts ProcInfo does not have")


_check_facts()
