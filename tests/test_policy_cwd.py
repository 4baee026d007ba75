"""The ``cwd`` matcher (one entry of pyoomd.policy.matchers): loading, the
pinning review (name-like: it pins nothing), matching real processes by
their working directory (also a removed one, an unreadable one, hostile
names), the plan's round trip, explain, and the fuzz strategy."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import find

from pyoomd.cli.dispatch import main
from pyoomd.model import ProcInfo
from pyoomd.policy.load import FileResult, check_text
from pyoomd.policy.matchers import BY_NAME, MATCHERS, NAME_LIKE, PINNING
from pyoomd.policy.rules import Loaded, PolicySet, Rule, loaded_from_plan, loaded_to_plan
from pyoomd.sense import snapshot
from pyoomd.sense.procfs import Procfs


def _check(match: str, effect: str = "adjust: 100", extra: str = "") -> FileResult:
    return check_text("p.yaml", f"version: 1\nrules:\n  - name: r\n    match: {match}\n    {effect}\n{extra}")


def _only_rule(res: FileResult) -> Rule:
    assert not res.errors and not res.refused, (res.errors, res.refused)
    assert len(res.rules) == 1
    return res.rules[0]


@pytest.fixture
def sleeper_in(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    """A real process whose working directory is tmp_path/<a hostile name>."""
    work = tmp_path / "build\nline two \x1b[31mred\x1b[0m \\x41"
    work.mkdir()
    p = subprocess.Popen(["sleep", "60"], cwd=work)
    try:
        yield p, work
    finally:
        p.kill()
        p.wait()


def _read(pid: int, procfs: Procfs | None = None) -> ProcInfo:
    deadline = time.monotonic() + 5
    while True:  # until the child has exec'd sleep (its comm says so)
        info = snapshot.read_proc(procfs or Procfs("/proc"), pid)
        assert info is not None
        if info.comm == "sleep" or time.monotonic() > deadline:
            return info
        time.sleep(0.01)


# -- the registry entry ------------------------------------------------------------------
def test_cwd_is_registered_as_name_like() -> None:
    m = BY_NAME["cwd"]
    assert m.fact == "cwd" and not m.pins and m.read is not None
    assert "cwd" in NAME_LIKE and PINNING == ("exe", "user", "cgroup")
    assert {m.name for m in MATCHERS} == {"comm", "cmdline", "exe", "user", "cgroup", "parent", "cwd"}


# -- loading --------------------------------------------------------------------------------
def test_cwd_loads_a_glob_or_a_list() -> None:
    one = _only_rule(_check("{cwd: /srv/ci/*}"))
    assert one.matcher("cwd") == ("/srv/ci/*",)
    two = _only_rule(_check("{cwd: [/srv/ci/*, /home/*/build]}"))
    assert two.matcher("cwd") == ("/srv/ci/*", "/home/*/build")


@pytest.mark.parametrize(("value", "says"), [
    ("build/*", "must be an absolute path or glob"), ("[]", "an empty list matches nothing"),
    ("7", "valid string"), ("{a: 1}", "valid list"),
])
def test_a_bad_cwd_is_an_error_naming_the_rule_and_line(value: str, says: str) -> None:
    res = _check(f"{{cwd: {value}}}")
    assert len(res.errors) == 1, res.errors
    e = res.errors[0]
    assert e.line == 4 and "rule 'r'" in e.message and "match.cwd" in e.message and says in e.message


def test_a_cwd_only_rule_cannot_protect_lower_or_kill_others() -> None:
    """Whoever starts a process chooses its working directory: cwd pins
    nothing, as comm does."""
    for effect in ("protect: true", "adjust: -100"):
        res = _check("{cwd: /srv/app}", effect)
        assert not res.rules and len(res.refused) == 1
        msg = res.refused[0].message
        assert "names alone (comm/cmdline/parent/cwd)" in msg and "pin exe, user or cgroup" in msg
        allowed = _check("{cwd: /srv/app}", effect, "    allow_name_only: true\n")
        assert len(allowed.rules) == 1 and "allowed here by allow_name_only" in allowed.warnings[0].message
    for kill in ("group", "cgroup"):  # allow_name_only does not lift this one
        res = _check("{cwd: /srv/app, comm: make}", f"kill: {kill}", "    allow_name_only: true\n")
        assert not res.rules and f"asks for kill: {kill}" in res.refused[0].message


def test_cwd_with_a_pin_may_protect_and_raising_needs_no_pin() -> None:
    assert _only_rule(_check("{cwd: /srv/app, user: 0}", "protect: true")).protect
    assert _only_rule(_check("{cwd: /srv/app}", "adjust: 300")).adjust == 300


# -- matching real processes ------------------------------------------------------------------
def test_cwd_matches_a_real_process_by_its_working_directory(tmp_path: Path) -> None:
    p = subprocess.Popen(["sleep", "60"], cwd=tmp_path)
    try:
        info = _read(p.pid)
        assert info.cwd == str(tmp_path)
        assert _only_rule(_check(f"{{cwd: '{tmp_path}'}}")).matches(info)
        assert _only_rule(_check(f"{{cwd: '{tmp_path.parent}/*'}}")).matches(info)
        assert not _only_rule(_check(f"{{cwd: '{tmp_path}/*'}}")).matches(info)
        assert not _only_rule(_check("{cwd: /srv/app}")).matches(info)
        # every matcher given must match
        assert not _only_rule(_check(f"{{cwd: '{tmp_path}', comm: '^bash$'}}")).matches(info)
        assert _only_rule(_check(f"{{cwd: '{tmp_path}', comm: '^sleep$'}}")).matches(info)
    finally:
        p.kill()
        p.wait()


def test_a_removed_working_directory_still_matches_its_path(tmp_path: Path) -> None:
    work = tmp_path / "job-1"
    work.mkdir()
    p = subprocess.Popen(["sleep", "60"], cwd=work)
    try:
        _read(p.pid)
        work.rmdir()
        info = _read(p.pid)
        assert info.cwd == f"{work} (deleted)"  # as the kernel shows it
        assert _only_rule(_check(f"{{cwd: '{work}'}}")).matches(info)
        assert _only_rule(_check(f"{{cwd: '{tmp_path}/job-*'}}")).matches(info)
    finally:
        p.kill()
        p.wait()


class _NoCwd(Procfs):
    """/proc/PID/cwd refused, as for another user's process without CAP_SYS_PTRACE."""

    def readlink_pid(self, pid: int, name: str) -> str:
        if name == "cwd":
            raise PermissionError(13, "Permission denied", self.pid_file(pid, name))
        return super().readlink_pid(pid, name)


def test_an_unreadable_or_vanished_cwd_never_matches(tmp_path: Path) -> None:
    p = subprocess.Popen(["sleep", "60"], cwd=tmp_path)
    try:
        info = _read(p.pid, _NoCwd("/proc"))
        assert info.cwd is None and info.exe is not None  # the rest is read as before
        for match in ("{cwd: /*}", f"{{cwd: '{tmp_path}'}}"):
            assert not _only_rule(_check(match)).matches(info)
        assert _only_rule(_check("{comm: '^sleep$'}")).matches(info)
    finally:
        p.kill()
        p.wait()
    assert snapshot.read_proc(Procfs("/proc"), p.pid) is None  # gone: no process, no error


def test_hostile_directory_names_match_and_stay_escaped_in_explain(
        sleeper_in: tuple[subprocess.Popen[bytes], Path], tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    p, work = sleeper_in
    info = _read(p.pid)
    assert info.cwd == str(work)
    assert _only_rule(_check(f"{{cwd: '{tmp_path}/build*'}}")).matches(info)  # * spans the newline
    assert not _only_rule(_check(f"{{cwd: '{tmp_path}/build'}}")).matches(info)
    policy = tmp_path / "p.yaml"
    policy.write_text(f"version: 1\nrules:\n  - name: ci-builds\n    match: {{cwd: '{tmp_path}/build*'}}\n"
                      "    adjust: 300\n")
    policy.chmod(0o644)
    assert main(["explain", "--config", os.devnull, "--policy", str(policy), str(p.pid)]) == 0
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if "matchers see:" in x)
    assert "cwd " + str(tmp_path) + "/build\\x0aline two \\x1b[31mred\\x1b[0m \\\\x41" in line
    assert "\x1b" not in out and "rule ci-builds" in out
    assert main(["explain", "--json", "--config", os.devnull, "--policy", str(policy), str(p.pid)]) == 0
    (item,) = json.loads(capsys.readouterr().out)
    assert item["matchers"]["cwd"] == str(work) and [r["name"] for r in item["rules"]] == ["ci-builds"]


# -- the plan ---------------------------------------------------------------------------------
def test_cwd_rules_survive_the_plan_round_trip(tmp_path: Path) -> None:
    res = _check(f"{{cwd: ['{tmp_path}', /srv/*], user: [0, 1000]}}", "protect: true")
    loaded = Loaded(PolicySet(res.rules, ("p.yaml",)))
    plan = json.loads(json.dumps(loaded_to_plan(loaded)))
    (rule,) = plan["rules"]
    assert rule["cwd"] == [str(tmp_path), "/srv/*"] and rule["uids"] == [0, 1000] and rule["comm"] is None
    back = loaded_from_plan(plan).policy.rules[0]
    assert back.matcher("cwd") == (str(tmp_path), "/srv/*") and back.matcher("user") == frozenset({0, 1000})
    assert loaded_to_plan(loaded_from_plan(plan)) == plan
    p = subprocess.Popen(["sleep", "60"], cwd=tmp_path)
    try:
        info = _read(p.pid)
        assert back.matches(info) and back.matches(info) == res.rules[0].matches(info)
    finally:
        p.kill()
        p.wait()


def test_a_plan_written_before_cwd_existed_still_loads() -> None:
    """A trace's header keeps the plan in force when it was recorded."""
    old = {"name": "keep-sshd", "file": "p.yaml", "line": 3, "comm": None, "cmdline": None, "parent": None,
           "exe": ["/usr/sbin/sshd"], "uids": [0], "cgroup": None, "adjust": 0, "protect": True,
           "kill_group": None, "signal": None, "grace_s": None, "kill_cgroup": False, "action": None}
    plan = {"rules": [old], "files": ["p.yaml"], "sort_by_rss": False, "loaded": ["p.yaml"], "skipped": [],
            "refused": [], "warnings": [], "missing_dirs": []}
    rule = loaded_from_plan(plan).policy.rules[0]
    assert rule.matcher("cwd") is None and rule.matcher("exe") == ("/usr/sbin/sshd",)
    sshd = ProcInfo(pid=10, start_time=1, comm="sshd", ppid=1, state="S", uid=0, rss_kib=1, swap_kib=0,
                    oom_score=1, oom_score_adj=0, exe="/usr/sbin/sshd")
    assert rule.matches(sshd) and rule.protect


# -- the fuzz strategy takes its keys from the registry ---------------------------------------
def test_the_policy_fuzz_strategy_draws_every_registered_matcher() -> None:
    import policy_strategies as fuzz

    assert {m.name for m in MATCHERS} <= set(fuzz.KEYS)
    for m in MATCHERS:
        drawn = find(fuzz.match_specs, lambda spec, name=m.name: name in spec)  # type: ignore[misc]
        assert m.name in drawn
