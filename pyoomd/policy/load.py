"""Policy files: schema, per-host selection, compile (matching: ``pyoomd.policy.rules``).

A policy file is YAML (``version: 1``, optional ``hosts`` globs, ``rules``),
validated strictly by pydantic (unknown keys are errors), then compiled once
into frozen ``Rule`` objects: regexes compiled, user names resolved to uids,
durations in seconds.  The loop only ever calls ``PolicySet.evaluate(proc)``,
which is pure.

The schema of ``match:`` is built from the matcher registry
(``pyoomd.policy.matchers``): one field per entry, its type and checks.

Spoof resistance: anyone can name a process ``sshd``.  A rule that protects
or lowers a score must pin something its owner cannot forge (a matcher
whose entry ``pins``: ``exe``, ``user`` or ``cgroup``); a rule that pins
only name-like ones (``comm``, ``cmdline``, ``parent``, ``cwd``) is refused,
and the refusal reported, unless it says ``allow_name_only: true``.

Errors are ``ConfigError(file, message, line, column)`` naming the rule.
"""

from __future__ import annotations

import fnmatch
import os
import pwd
import socket
import stat
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)

from .. import yamlfile
from ..errors import ConfigError
from ..judge.rank import BADNESS_MAX
from ..settings.amounts import parse_duration_s
from ..settings.trust import program_problem, trust_problem
from .matchers import MATCHERS, NAME_LIKE, PINNING, Resolver, words
from .rules import Finding, Loaded, PolicySet, Rule

# The compiled classes live in pyoomd.policy.rules (light: the running loop
# imports that, never this module); they are re-exported here.
__all__ = ["Finding", "Loaded", "PolicySet", "Rule", "check_file", "check_text", "expand", "host_applies",
           "load_policies"]

# Size and expansion limits: pyoomd.yamlfile's, the same for the config.
MAX_FILE_BYTES = yamlfile.MAX_FILE_BYTES
MAX_NODES = yamlfile.MAX_NODES
# More errors than this in one file are summarised: the first ones matter.
MAX_ERRORS = 20
POLICY_SUFFIXES = (".yaml", ".yml")
_RULE_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.:@+-]{0,63}$"
# In messages: "(comm/cmdline/parent/cwd)", "pin exe, user or cgroup".
_NAMES = "/".join(NAME_LIKE)
_PINS = words(PINNING)


# -- schema ------------------------------------------------------------------------
class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


def _match_field(m: Any) -> Any:
    """One matcher's field: its YAML type, strict, checked by its entry."""
    return (Annotated[m.yaml_type | None, BeforeValidator(m.before), AfterValidator(m.check)], None)


def _something(self: Any) -> Any:
    if not any(getattr(self, m.name) is not None for m in MATCHERS):
        raise ValueError(f"match needs at least one of {', '.join(m.name for m in MATCHERS)}")
    return self


# Every matcher given must match (the fields: pyoomd.policy.matchers.MATCHERS).
_VALIDATORS: dict[str, Any] = {"_something": model_validator(mode="after")(_something)}
MatchSpec: type[_Strict] = create_model(
    "MatchSpec", __base__=_Strict, __validators__=_VALIDATORS, **{m.name: _match_field(m) for m in MATCHERS})


class RuleSpec(_Strict):
    name: StrictStr = Field(pattern=_RULE_NAME)
    match: MatchSpec  # type: ignore[valid-type]  # built from the registry
    # The kernel's oom_score scale is 0..2000: a larger adjust cannot mean more.
    adjust: StrictInt = Field(default=0, ge=-BADNESS_MAX, le=BADNESS_MAX)
    protect: StrictBool = False
    kill: Literal["process", "group", "cgroup"] | None = None
    signal: Literal["SIGTERM", "SIGKILL"] | None = None
    grace: float | None = None
    # A soft action tried first (act/soft.py): ("run", argv...) or ("restart-unit",).
    action: tuple[str, ...] | None = None
    allow_name_only: StrictBool = False

    @field_validator("grace", mode="before")
    @classmethod
    def _grace(cls, v: Any) -> Any:
        return None if v is None else parse_duration_s(v)

    @field_validator("action", mode="before")
    @classmethod
    def _action(cls, v: Any) -> Any:
        return None if v is None else parse_action(v)


ACTION_FORMS = "'restart-unit' or {run: [/absolute/program, args...]}"


def parse_action(v: Any) -> tuple[str, ...]:
    """``restart-unit`` or ``{run: [argv...]}`` -> ("restart-unit",) or
    ("run", argv...).  The argv is a list of strings, its program an absolute
    path: no shell, no PATH search (as hooks)."""
    if v == "restart-unit":
        return ("restart-unit",)
    if isinstance(v, str):  # ValueError, not TypeError: pydantic reports only the former as a message
        raise ValueError(f"unknown action {v!r}: expected {ACTION_FORMS}")
    if not isinstance(v, dict) or set(v) != {"run"}:
        keys = f" (keys {sorted(map(str, v))})" if isinstance(v, dict) else ""
        raise ValueError(f"an action is {ACTION_FORMS}{keys}")
    argv = v["run"]
    if isinstance(argv, str):
        raise ValueError(f"run: an argv list, not a command line string (no shell): write [{argv!r}]")
    if not isinstance(argv, list) or not argv or not all(isinstance(a, str) and a for a in argv):
        raise ValueError("run: a non-empty list of non-empty strings (program, args...)")
    if not argv[0].startswith("/"):
        raise ValueError(f"run: the program must be an absolute path (no shell, no PATH search): {argv[0]!r}")
    if any("\0" in a for a in argv):
        raise ValueError("run: an argument holds a NUL byte")
    return ("run", *argv)


class PolicyDoc(_Strict):
    version: Literal[1]
    hosts: list[StrictStr] | None = None
    rules: list[RuleSpec] = []

    @field_validator("hosts")
    @classmethod
    def _hosts(cls, v: list[str] | None) -> list[str] | None:
        if v is not None and not v:
            raise ValueError("an empty list matches no host (leave hosts out to mean every host)")
        return v


# -- compiled ----------------------------------------------------------------------
@dataclass
class FileResult:
    """What checking one file found."""

    file: str
    errors: list[ConfigError] = field(default_factory=list)
    warnings: list[Finding] = field(default_factory=list)
    refused: list[Finding] = field(default_factory=list)  # rules the daemon will not use
    rules: tuple[Rule, ...] = ()
    hosts: tuple[str, ...] | None = None
    applies: bool = True


# -- YAML -> nodes (pyoomd.yamlfile: one loader for config and policies) -----------
def _parse_yaml(path: str, text: str) -> tuple[Any, Any]:
    """(data, node) from one document; errors name file:line:column."""
    return yamlfile.parse(path, text)


def _locate(node: Any, loc: Iterable[Any]) -> tuple[int | None, int | None]:
    """line, column (1-based) of a pydantic error location in the node tree:
    the value when it exists, else the nearest enclosing node."""
    mark = node.start_mark if node is not None else None
    for key in loc:
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                if isinstance(k, yaml.ScalarNode) and k.value == str(key):
                    node, mark = v, v.start_mark
                    break
            else:
                break
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and 0 <= key < len(node.value):
            node = node.value[key]
            mark = node.start_mark
        else:
            break
    return (mark.line + 1, mark.column + 1) if mark is not None else (None, None)


def _key_mark(node: Any, loc: tuple[Any, ...]) -> tuple[int | None, int | None]:
    """For an unknown key: the key itself, not its value."""
    parent_loc, key = loc[:-1], loc[-1]
    line, col = _locate(node, parent_loc)
    parent = _node_at(node, parent_loc)
    if isinstance(parent, yaml.MappingNode):
        for k, _ in parent.value:
            if isinstance(k, yaml.ScalarNode) and k.value == str(key):
                return k.start_mark.line + 1, k.start_mark.column + 1
    return line, col


def _node_at(node: Any, loc: Iterable[Any]) -> Any:
    for key in loc:
        if isinstance(node, yaml.MappingNode):
            node = next((v for k, v in node.value if isinstance(k, yaml.ScalarNode) and k.value == str(key)),
                        None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and 0 <= key < len(node.value):
            node = node.value[key]
        else:
            return None
    return node


def _rule_name(data: Any, loc: tuple[Any, ...]) -> str | None:
    if len(loc) >= 2 and loc[0] == "rules" and isinstance(loc[1], int) and isinstance(data, dict):
        rules = data.get("rules")
        if isinstance(rules, list) and 0 <= loc[1] < len(rules) and isinstance(rules[loc[1]], dict):
            name = rules[loc[1]].get("name")
            return name if isinstance(name, str) else f"#{loc[1] + 1}"
        return f"#{loc[1] + 1}"
    return None


def _validation_errors(path: str, data: Any, node: Any, err: ValidationError) -> list[ConfigError]:
    out = []
    for e in err.errors()[:MAX_ERRORS]:
        loc = tuple(p for p in e["loc"] if not (isinstance(p, str) and p.startswith(("function-", "union["))))
        key = ".".join(str(p) for p in loc) or "(top level)"
        msg = e["msg"].removeprefix("Value error, ")
        value = e.get("input")
        text = f"{key}: {msg}"
        if e["type"] not in ("missing", "extra_forbidden") and not isinstance(value, (dict, list)):
            shown = repr(value)
            if shown not in msg:
                text += f" (got {shown[:80]})"
        rule = _rule_name(data, loc)
        if rule is not None:  # "rule 'x': match.comm: ..." reads better than "rules.3.match.comm"
            text = f"rule {rule!r}: {text.removeprefix(f'rules.{loc[1]}.')}"
        line, col = _key_mark(node, loc) if e["type"] == "extra_forbidden" and loc else _locate(node, loc)
        out.append(ConfigError(path, text, line, col))
    return out


# -- compile -----------------------------------------------------------------------
def default_resolver(name: str) -> int | None:
    """uid of a user name on this host, or None."""
    try:
        return pwd.getpwnam(name).pw_uid
    except KeyError:
        return None


def _given(spec: RuleSpec) -> list[tuple[Any, Any]]:
    """(matcher, checked YAML value) for each matcher the rule gives."""
    return [(m, v) for m in MATCHERS if (v := getattr(spec.match, m.name)) is not None]


def _compile_rule(path: str, spec: RuleSpec, line: int, resolve: Resolver) -> tuple[Rule, list[str]]:
    match = []
    warnings: list[str] = []
    for m, v in _given(spec):
        compiled, said = m.compile(v, resolve)
        match.append((m, compiled))
        warnings.extend(said)
    rule = Rule(
        name=spec.name, file=path, line=line, match=tuple(match),
        adjust=spec.adjust, protect=spec.protect,
        kill_group=None if spec.kill is None else spec.kill == "group",
        kill_cgroup=spec.kill == "cgroup",
        signal=spec.signal, grace_s=spec.grace, action=spec.action,
    )
    return rule, warnings


def _pins(spec: RuleSpec) -> bool:
    return any(m.pins for m, _ in _given(spec))


def _review(res: FileResult, spec: RuleSpec, said: list[str], where: tuple[int, int]) -> bool:
    """Warnings for one rule; False if the daemon must refuse it."""
    line, col = where

    def warn(msg: str) -> None:
        res.warnings.append(Finding(res.file, line, col, f"rule {spec.name!r}: {msg}"))

    for msg in said:  # what compiling the matchers found (an unknown user)
        warn(msg)
    if spec.protect and spec.adjust:
        warn("protect wins: its adjust is never used")
    if not (spec.protect or spec.adjust or spec.kill or spec.signal or spec.grace is not None or spec.action):
        warn("does nothing (no adjust, protect, kill, signal, grace or action)")
    if spec.kill in ("group", "cgroup") and not _pins(spec):
        # Other processes go with the victim: who is matched must be pinned,
        # or a process that names itself `make` takes its group along.
        # allow_name_only does not lift this one.
        res.refused.append(Finding(res.file, line, col, (
            f"rule {spec.name!r} asks for kill: {spec.kill} on process names alone ({_NAMES}), "
            f"which anyone can choose; pin {_PINS}; the daemon refuses this rule")))
        return False
    if spec.protect and spec.action:
        warn("protect wins: a protected process is never acted on, so its action never runs")
    if spec.action and spec.action[0] == "run":
        problem, fatal = program_problem(spec.action[1])
        if fatal:  # as root, a program others could rewrite would run as the victim's user: an error
            res.errors.append(ConfigError(res.file, f"rule {spec.name!r}: {problem}", line, col))
            return False
        if problem:
            warn(problem)
    lowers = spec.protect or spec.adjust < 0
    pins = [(m, v) for m, v in _given(spec) if m.pins]
    weak = [w for m, v in pins for w in m.weakness(v)]
    if lowers and weak and all(m.weakness(v) for m, v in pins):  # no strong pin beside the weak ones
        for w in weak:
            warn(w)
    if lowers and not _pins(spec):
        what = "protects" if spec.protect else "lowers the score"
        msg = (f"rule {spec.name!r} {what} on process names alone ({_NAMES}), which anyone "
               f"can choose; pin {_PINS}")
        if spec.allow_name_only:
            res.warnings.append(Finding(res.file, line, col, msg + " (allowed here by allow_name_only)"))
            return True
        res.refused.append(Finding(res.file, line, col, msg + "; the daemon refuses this rule "
                                   "(allow_name_only: true accepts it)"))
        return False
    return True


def check_text(path: str, text: str, hostname: str | None = None,
               resolve: Resolver = default_resolver) -> FileResult:
    """Validate and compile one file's text.  Never raises: errors are in
    the result."""
    res = FileResult(path)
    try:
        data, node = _parse_yaml(path, text)
    except ConfigError as e:
        res.errors.append(e)
        return res
    if data is None:
        data = {}
    if not isinstance(data, dict):
        res.errors.append(ConfigError(path, f"the top level must be a mapping, not {type(data).__name__}", 1, 1))
        return res
    try:
        doc = PolicyDoc.model_validate(data)
    except ValidationError as e:
        res.errors.extend(_validation_errors(path, data, node, e))
        return res
    _compile_doc(res, doc, node, resolve)
    res.hosts = tuple(doc.hosts) if doc.hosts is not None else None
    res.applies = hostname is None or host_applies(res.hosts, hostname)
    return res


def _compile_doc(res: FileResult, doc: PolicyDoc, node: Any, resolve: Resolver) -> None:
    rules = []
    names: set[str] = set()
    for i, spec in enumerate(doc.rules):
        line, col = _locate(node, ("rules", i))
        if spec.name in names:
            res.errors.append(ConfigError(res.file, f"rule {spec.name!r}: duplicate rule name", line, col))
            continue
        names.add(spec.name)
        rule, said = _compile_rule(res.file, spec, line or 0, resolve)
        if _review(res, spec, said, (line or 0, col or 0)):
            rules.append(rule)
    res.rules = tuple(rules)


def host_applies(hosts: tuple[str, ...] | None, hostname: str) -> bool:
    """No hosts: every host.  Globs match the hostname or its short form,
    case-insensitively (hostnames are)."""
    if hosts is None:
        return True
    names = {hostname.lower(), hostname.lower().split(".", 1)[0]}
    return any(fnmatch.fnmatchcase(n, g.lower()) for g in hosts for n in names)


# -- files -------------------------------------------------------------------------
def read_policy_file(path: str, euid: int | None = None) -> str:
    """The text of a policy file: a regular file (a FIFO or device is
    refused before it is opened), owned and writable only by root when we
    run as root (pyoomd.yamlfile.read_trusted)."""
    return yamlfile.read_trusted(path, euid, MAX_FILE_BYTES)


def expand(paths: Iterable[str], euid: int | None = None, missing_ok: bool = False,
           ) -> tuple[list[str], list[str]]:
    """Files to load, in order (a directory's *.yaml/*.yml in lexical order),
    and the directories that do not exist (only when ``missing_ok``)."""
    euid = os.geteuid() if euid is None else euid
    files: list[str] = []
    missing: list[str] = []
    for p in paths:
        try:
            st = os.stat(p)
        except FileNotFoundError:
            if missing_ok:
                missing.append(p)
                continue
            raise ConfigError(p, "no such file or directory") from None
        except OSError as e:
            raise ConfigError(p, f"cannot read: {e.strerror}") from None
        except ValueError as e:  # a NUL in the path
            raise ConfigError(repr(p), f"cannot read: {e}") from None
        if not stat.S_ISDIR(st.st_mode):
            files.append(p)
            continue
        problem = trust_problem(st, euid)
        if problem:
            raise ConfigError(p, f"refused directory: {problem}")
        names = sorted(n for n in os.listdir(p) if n.endswith(POLICY_SUFFIXES) and not n.startswith("."))
        files.extend(os.path.join(p, n) for n in names)
    return files, missing


def check_file(path: str, hostname: str | None = None, euid: int | None = None,
               resolve: Resolver = default_resolver) -> FileResult:
    try:
        text = read_policy_file(path, euid)
    except ConfigError as e:
        return FileResult(path, errors=[e])
    return check_text(path, text, hostname, resolve)


def load_policies(paths: Iterable[str], hostname: str | None = None, euid: int | None = None,
                  missing_ok: bool = False, resolve: Resolver = default_resolver) -> Loaded:
    """Every file that applies to this host, compiled; raises the first
    ConfigError of any file (nothing is half-loaded)."""
    hostname = socket.gethostname() if hostname is None else hostname
    files, missing = expand(paths, euid, missing_ok)
    out = Loaded(PolicySet(), missing_dirs=missing)
    rules: list[Rule] = []
    for f in files:
        res = check_file(f, hostname, euid, resolve)
        if res.errors:
            first = res.errors[0]
            if len(res.errors) > 1:
                raise ConfigError(first.file, f"{first.message} (and {len(res.errors) - 1} more errors)",
                                  first.line, first.column)
            raise first
        if not res.applies:
            out.skipped.append((f, f"hosts {list(res.hosts or ())} do not match {hostname!r}"))
            continue
        out.loaded.append(f)
        out.refused.extend(res.refused)
        out.warnings.extend(res.warnings)
        rules.extend(res.rules)
    out.policy = PolicySet(tuple(rules), tuple(out.loaded))
    return out
