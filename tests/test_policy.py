"""Policy files: schema errors with file:line:column, per-host selection,
matching, adjust summing and clamping, protect, spoof resistance,
permissions, reload keeping the last good set.  No root, no real /proc."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest
from helpers import FakeSampler
from logcapture import Log

from pyoomd.errors import ConfigError
from pyoomd.judge.rank import BADNESS_MAX, score
from pyoomd.model import Candidate, Excluded, MemSample, ProcInfo
from pyoomd.policy.load import (
    PolicySet,
    check_text,
    expand,
    host_applies,
    load_policies,
    read_policy_file,
)
from pyoomd.settings.schema import Settings
from pyoomd.settings.trust import trust_problem

POLICIES = Path(__file__).resolve().parent.parent / "policies"
USERS = {"root": 0, "alice": 1000, "www-data": 33}


def resolve(name: str) -> int | None:
    return USERS.get(name)


def proc(pid: int = 100, comm: str = "proc", oom_score: int = 100, adj: int = 0, uid: int = 1000,
         exe: str | None = "/usr/bin/proc", cmdline: str | None = "/usr/bin/proc",
         cgroup: str | None = "/user.slice/user-1000.slice/app.slice/x.scope",
         parent_comm: str | None = "bash", rss_kib: int = 4000) -> ProcInfo:
    return ProcInfo(pid=pid, start_time=1000 + pid, comm=comm, ppid=1, state="S", uid=uid, rss_kib=rss_kib,
                    swap_kib=0, oom_score=oom_score, oom_score_adj=adj, pgid=pid, cmdline=cmdline, exe=exe,
                    cgroup=cgroup, parent_comm=parent_comm)


def doc(body: str) -> str:
    return textwrap.dedent(body).lstrip("\n")


def compile_ok(text: str, host: str | None = None) -> PolicySet:
    res = check_text("p.yaml", doc(text), host, resolve)
    assert not res.errors, [str(e) for e in res.errors]
    return PolicySet(res.rules)


def errors_of(text: str) -> list[ConfigError]:
    res = check_text("p.yaml", doc(text), None, resolve)
    assert res.errors, "expected errors"
    return res.errors


ISSUE_EXAMPLE = """
version: 1
hosts: ["build-*", "ci-runner-?"]   # optional hostname globs; default: every host
rules:
  - name: browser-renderers
    match:
      comm: "^(chrome|chromium|Web Content|Isolated Web Co)$"   # regex on /proc/PID/comm
      cmdline: "--type=renderer"                                  # regex, searched
    adjust: +300                     # added to the kernel oom_score (0..2000 scale)
  - name: keep-sshd
    match: {exe: /usr/sbin/sshd, user: root}
    protect: true                    # never a candidate
  - name: build-jobs
    match: {cgroup: "/user.slice/*/app.slice/*build*"}
    adjust: +500
    kill: group                      # signal the whole process group
"""


# -- the issue's example ----------------------------------------------------------
def test_issue_example_compiles() -> None:
    res = check_text("ex.yaml", doc(ISSUE_EXAMPLE), "build-7", resolve)
    assert not res.errors and not res.refused
    assert [r.name for r in res.rules] == ["browser-renderers", "keep-sshd", "build-jobs"]
    assert res.applies
    ps = PolicySet(res.rules)
    renderer = proc(comm="chrome", cmdline="/opt/chrome/chrome --type=renderer --lang=en")
    assert ps.evaluate(renderer).adjust == 300
    assert ps.evaluate(proc(comm="chrome", cmdline="/opt/chrome/chrome")).rules == ()
    sshd = proc(comm="sshd", exe="/usr/sbin/sshd", uid=0)
    v = ps.evaluate(sshd)
    assert v.protect and v.protect_rule == "keep-sshd"
    build = proc(cgroup="/user.slice/user-1000.slice/app.slice/run-build-42.scope")
    v = ps.evaluate(build)
    assert (v.adjust, v.kill_group, v.rules) == (500, True, ("build-jobs",))


# -- schema errors: file, line, column, rule -------------------------------------
def test_unknown_key_names_line_column_and_rule() -> None:
    (e,) = errors_of("""
        version: 1
        rules:
          - name: r1
            match: {comm: x}
            adjust: 5
            adjsut: 6
        """)
    assert (e.file, e.line, e.column) == ("p.yaml", 6, 5)
    assert "rule 'r1'" in e.message and "adjsut" in e.message


def test_bad_regex_is_an_error_naming_file_line_and_rule() -> None:
    (e,) = errors_of("""
        version: 1
        rules:
          - name: broken
            match:
              comm: "^(chrome"
            adjust: 5
        """)
    assert e.line == 5 and e.column == 13
    assert "rule 'broken'" in e.message and "invalid regex" in e.message
    assert str(e).startswith("p.yaml:5:13: ")


@pytest.mark.parametrize("field", ["cmdline", "parent"])
def test_bad_regex_in_other_matchers(field: str) -> None:
    (e,) = errors_of(f"""
        version: 1
        rules:
          - name: r
            match: {{{field}: "a[b"}}
            adjust: 1
        """)
    assert "invalid regex" in e.message and e.line == 4


def test_yaml_syntax_error_has_line_and_column() -> None:
    (e,) = errors_of("version: 1\nrules:\n  - name: [unclosed\n")
    assert e.line is not None and e.column is not None and "invalid YAML" in e.message


def test_duplicate_key_is_an_error() -> None:
    (e,) = errors_of("""
        version: 1
        rules:
          - name: r
            match: {comm: x}
            adjust: 1
            adjust: 2
        """)
    assert e.line == 6 and "duplicate key 'adjust'" in e.message


def test_duplicate_rule_name_is_an_error() -> None:
    (e,) = errors_of("""
        version: 1
        rules:
          - {name: r, match: {comm: a}, adjust: 1}
          - {name: r, match: {comm: b}, adjust: 2}
        """)
    assert e.line == 4 and "duplicate rule name" in e.message


@pytest.mark.parametrize("text, needle", [
    ("rules: []\n", "version"),
    ("version: 2\nrules: []\n", "version"),
    ("version: 1\nrules: [{name: r, match: {}, adjust: 1}]\n", "at least one of"),
    ("version: 1\nrules: [{name: r, match: {comm: x}, adjust: '300'}]\n", "integer"),
    ("version: 1\nrules: [{name: r, match: {comm: x}, adjust: 2001}]\n", "2000"),
    ("version: 1\nrules: [{name: r, match: {comm: x}, protect: 'yes'}]\n", "boolean"),
    ("version: 1\nrules: [{name: r, match: {comm: x}, kill: everything}]\n", "group"),
    ("version: 1\nrules: [{name: r, match: {comm: x}, signal: SIGSTOP}]\n", "SIGKILL"),
    ("version: 1\nrules: [{name: r, match: {comm: x}, grace: soon}]\n", "duration"),
    ("version: 1\nrules: [{name: r, match: {exe: sshd}, protect: true}]\n", "absolute"),
    ("version: 1\nrules: [{name: r, match: {cgroup: []}, adjust: 1}]\n", "empty"),
    ("version: 1\nrules: [{name: 'has space', match: {comm: x}, adjust: 1}]\n", "name"),
    ("version: 1\nhosts: build-1\nrules: []\n", "hosts"),
    ("version: 1\nhosts: []\nrules: []\n", "no host"),
    ("- 1\n- 2\n", "mapping"),
    ("version: 1\nrules: {name: r}\n", "rules"),
])
def test_schema_errors(text: str, needle: str) -> None:
    errs = errors_of(text)
    assert any(needle in e.message for e in errs), [str(e) for e in errs]
    assert all(e.file == "p.yaml" and e.line is not None for e in errs)


def test_several_errors_are_all_reported() -> None:
    errs = errors_of("""
        version: 1
        rules:
          - {name: a, match: {comm: "("}, adjust: 1}
          - {name: b, match: {comm: x}, adjust: nope}
        """)
    assert [e.line for e in errs] == [3, 4]


def test_alias_bomb_is_refused() -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 8):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]")
    (e,) = errors_of("\n".join(lines) + "\nversion: 1\n")
    assert "too large" in e.message


def test_empty_file_needs_a_version() -> None:
    (e,) = errors_of("")
    assert "version" in e.message


# -- matching ------------------------------------------------------------------------
def test_all_matchers_must_match() -> None:
    ps = compile_ok("""
        version: 1
        rules:
          - name: r
            match: {comm: "^node$", cmdline: "tsserver", user: alice, parent: "^code$",
                    exe: "/usr/lib/*/node", cgroup: "/user.slice/*"}
            adjust: 100
        """)
    hit = proc(comm="node", cmdline="node /x/tsserver.js", uid=1000, parent_comm="code",
               exe="/usr/lib/node18/node", cgroup="/user.slice/u/app.scope")
    assert ps.evaluate(hit).adjust == 100
    for change in ({"comm": "nodejs"}, {"cmdline": "node x.js"}, {"uid": 33}, {"parent_comm": "bash"},
                   {"exe": "/usr/bin/node"}, {"cgroup": "/system.slice/x"}, {"cmdline": None},
                   {"exe": None}, {"cgroup": None}, {"parent_comm": None}):
        fields = {"comm": "node", "cmdline": "node /x/tsserver.js", "uid": 1000, "parent_comm": "code",
                  "exe": "/usr/lib/node18/node", "cgroup": "/user.slice/u/app.scope", **change}
        assert ps.evaluate(proc(**fields)).rules == (), change


def test_lists_of_users_and_exes() -> None:
    ps = compile_ok("""
        version: 1
        rules:
          - {name: r, match: {user: [root, 33, "1000"], exe: [/a, /b*]}, adjust: 1}
        """)
    for uid, exe in ((0, "/a"), (33, "/bee"), (1000, "/b")):
        assert ps.evaluate(proc(uid=uid, exe=exe)).adjust == 1
    assert ps.evaluate(proc(uid=1, exe="/a")).adjust == 0
    assert ps.evaluate(proc(uid=0, exe="/c")).adjust == 0


def test_deleted_exe_still_matches_its_path() -> None:
    ps = compile_ok("""
        version: 1
        rules: [{name: keep, match: {exe: /usr/sbin/sshd, user: root}, protect: true}]
        """)
    assert ps.evaluate(proc(uid=0, exe="/usr/sbin/sshd (deleted)")).protect


def test_unknown_user_warns_and_matches_nobody() -> None:
    res = check_text("p.yaml", doc("""
        version: 1
        rules: [{name: r, match: {user: [ghost, alice]}, adjust: 7}]
        """), None, resolve)
    assert not res.errors
    assert any("ghost" in w.message for w in res.warnings)
    ps = PolicySet(res.rules)
    assert ps.evaluate(proc(uid=1000)).adjust == 7


# -- adjust summing, clamping, protect, -1000 ------------------------------------------
SUMMING = """
version: 1
rules:
  - {name: big, match: {comm: "^hog"}, adjust: 1500}
  - {name: bigger, match: {comm: "hog$"}, adjust: 900}
  - {name: less, match: {user: alice}, adjust: -300}
"""


def test_adjusts_sum_and_badness_is_clamped() -> None:
    ps = compile_ok(SUMMING)
    v = ps.evaluate(proc(comm="hog", uid=1000))
    assert v.adjust == 1500 + 900 - 300 and v.rules == ("big", "bigger", "less")
    c = score(proc(comm="hog", oom_score=500, uid=1000), ps)
    assert isinstance(c, Candidate) and c.badness == BADNESS_MAX
    low = score(proc(comm="x", oom_score=100, uid=1000), ps)
    assert isinstance(low, Candidate) and low.badness == 0 and low.rules == ("less",)


def test_max_bonus_bounds_every_total() -> None:
    ps = compile_ok(SUMMING)
    assert ps.max_bonus == min(BADNESS_MAX, 1500 + 900)
    assert PolicySet().max_bonus == 0
    small = compile_ok("version: 1\nrules: [{name: a, match: {comm: a}, adjust: 5}, "
                       "{name: b, match: {comm: b}, adjust: -50}]\n")
    assert small.max_bonus == 5


def test_protect_wins_over_any_adjust() -> None:
    ps = compile_ok("""
        version: 1
        rules:
          - {name: prefer, match: {comm: db}, adjust: 2000}
          - {name: keep, match: {comm: db, user: root}, protect: true}
        """)
    out = score(proc(comm="db", uid=0, oom_score=900), ps)
    assert isinstance(out, Excluded) and "keep" in out.why
    assert isinstance(score(proc(comm="db", uid=1000), ps), Candidate)


def test_minus_1000_stays_untouchable_whatever_the_policy() -> None:
    ps = compile_ok("version: 1\nrules: [{name: kill-it, match: {comm: x}, adjust: 2000, signal: SIGKILL}]\n")
    out = score(proc(comm="x", adj=-1000, oom_score=0), ps)
    assert isinstance(out, Excluded) and "-1000" in out.why


def test_first_rule_setting_kill_signal_grace_wins() -> None:
    ps = compile_ok("""
        version: 1
        rules:
          - {name: a, match: {comm: x}, adjust: 1, grace: 250ms}
          - {name: b, match: {comm: x}, kill: process, signal: SIGKILL, grace: 9s}
          - {name: c, match: {comm: x}, kill: group}
        """)
    v = ps.evaluate(proc(comm="x"))
    assert (v.grace_s, v.signal, v.kill_group) == (0.25, "SIGKILL", False)
    c = score(proc(comm="x"), ps)
    assert isinstance(c, Candidate) and (c.grace_s, c.signal, c.kill_group) == (0.25, "SIGKILL", False)


# -- spoof resistance ---------------------------------------------------------------
@pytest.mark.parametrize("effect", ["protect: true", "adjust: -500"])
def test_name_only_protection_is_refused(effect: str) -> None:
    res = check_text("p.yaml", doc(f"""
        version: 1
        rules:
          - name: fake-keep
            match: {{comm: "^sshd$", cmdline: sshd, parent: systemd}}
            {effect}
        """), None, resolve)
    assert not res.errors and res.rules == ()
    (f,) = res.refused
    assert f.line == 3 and "fake-keep" in f.message and "refuses" in f.message
    spoof = proc(comm="sshd", cmdline="sshd", parent_comm="systemd", oom_score=500)
    assert isinstance(score(spoof, PolicySet(res.rules)), Candidate)


def test_allow_name_only_accepts_with_a_warning() -> None:
    res = check_text("p.yaml", doc("""
        version: 1
        rules:
          - {name: kiosk, match: {comm: "^kiosk$"}, protect: true, allow_name_only: true}
        """), None, resolve)
    assert not res.refused and len(res.rules) == 1
    assert any("allow_name_only" in w.message for w in res.warnings)


def test_raising_a_score_by_name_is_fine() -> None:
    res = check_text("p.yaml", doc("version: 1\nrules: [{name: tabs, match: {comm: chrome}, adjust: 300}]\n"),
                     None, resolve)
    assert not res.refused and not res.warnings


def test_protecting_an_interpreter_by_exe_alone_warns() -> None:
    res = check_text("p.yaml", doc("""
        version: 1
        rules: [{name: py, match: {exe: /usr/bin/python3}, protect: true}]
        """), None, resolve)
    assert len(res.rules) == 1 and any("script" in w.message for w in res.warnings)


def test_spoofed_sshd_does_not_get_sshds_protection() -> None:
    ps = compile_ok(ISSUE_EXAMPLE)
    # exec through a symlink named sshd: comm says sshd, /proc/PID/exe says python
    spoof = proc(comm="sshd", exe="/usr/bin/python3.11", uid=0, cmdline="sshd -D")
    assert isinstance(score(spoof, ps), Candidate)
    user_copy = proc(comm="sshd", exe="/usr/sbin/sshd", uid=1000)  # the real binary, run by a user
    assert isinstance(score(user_copy, ps), Candidate)


# -- hosts ---------------------------------------------------------------------------
@pytest.mark.parametrize("hosts, name, ok", [
    (None, "anything", True),
    (("build-*",), "build-3", True),
    (("build-*",), "BUILD-3.example.com", True),  # case-insensitive, short name
    (("ci-runner-?",), "ci-runner-12", False),
    (("db-*", "web-?"), "web-1", True),
    (("db.example.com",), "db.example.com", True),
    (("db-*",), "build-3", False),
])
def test_host_applies(hosts: tuple[str, ...] | None, name: str, ok: bool) -> None:
    assert host_applies(hosts, name) is ok


def write(path: Path, text: str, mode: int = 0o644) -> Path:
    path.write_text(doc(text))
    path.chmod(mode)
    return path


def test_load_dir_in_lexical_order_and_skips_other_hosts(tmp_path: Path) -> None:
    write(tmp_path / "20-b.yaml", "version: 1\nrules: [{name: b, match: {comm: x}, adjust: 2}]\n")
    write(tmp_path / "10-a.yml", "version: 1\nrules: [{name: a, match: {comm: x}, adjust: 1}]\n")
    write(tmp_path / "30-db.yaml", "version: 1\nhosts: ['db-*']\nrules: [{name: d, match: {comm: x}, adjust: 4}]\n")
    write(tmp_path / "README", "not yaml: [")
    write(tmp_path / ".hidden.yaml", "not yaml: [")
    loaded = load_policies([str(tmp_path)], hostname="web-1", euid=1000, resolve=resolve)
    assert [os.path.basename(f) for f in loaded.loaded] == ["10-a.yml", "20-b.yaml"]
    assert [os.path.basename(f) for f, _ in loaded.skipped] == ["30-db.yaml"]
    assert "db-*" in loaded.skipped[0][1]
    assert [r.name for r in loaded.policy.rules] == ["a", "b"]
    on_db = load_policies([str(tmp_path)], hostname="db-2", euid=1000, resolve=resolve)
    assert [r.name for r in on_db.policy.rules] == ["a", "b", "d"]
    summary = loaded.summary()
    assert summary["policy_rules"] == ["a", "b"] and len(summary["policy_skipped"]) == 1


def test_one_bad_file_fails_the_whole_load(tmp_path: Path) -> None:
    write(tmp_path / "a.yaml", "version: 1\nrules: [{name: a, match: {comm: x}, adjust: 1}]\n")
    write(tmp_path / "b.yaml", "version: 1\nrules: [{name: b, match: {comm: '('}, adjust: 1}]\n")
    with pytest.raises(ConfigError) as ei:
        load_policies([str(tmp_path)], hostname="h", euid=1000)
    assert ei.value.file.endswith("b.yaml") and ei.value.line == 2


def test_missing_paths(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        load_policies([str(tmp_path / "nope")], hostname="h", euid=1000)
    loaded = load_policies([str(tmp_path / "nope")], hostname="h", euid=1000, missing_ok=True)
    assert loaded.policy.rules == () and loaded.missing_dirs == [str(tmp_path / "nope")]
    assert loaded.summary()["policy"] == "none"


def test_explicit_file_loads_whatever_its_name(tmp_path: Path) -> None:
    f = write(tmp_path / "policy.conf", "version: 1\nrules: [{name: a, match: {comm: x}, adjust: 1}]\n")
    files, _ = expand([str(f)], euid=1000)
    assert files == [str(f)]


def test_not_utf8_and_too_large(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_bytes(b"version: 1\nrules: []\n# \xff\n")
    with pytest.raises(ConfigError, match="UTF-8"):
        read_policy_file(str(bad), euid=1000)
    big = tmp_path / "big.yaml"
    big.write_bytes(b"#" * (2 << 20))
    with pytest.raises(ConfigError, match="larger"):
        read_policy_file(str(big), euid=1000)


# -- permissions (as root: the care sudo takes) ---------------------------------------
class FakeStat:
    def __init__(self, uid: int, mode: int) -> None:
        self.st_uid = uid
        self.st_mode = mode


@pytest.mark.parametrize("uid, mode, euid, refused", [
    (0, 0o100644, 0, None),
    (0, 0o100664, 0, "group or others"),
    (0, 0o100646, 0, "group or others"),
    (1000, 0o100644, 0, "owned by uid 1000"),
    (1000, 0o100666, 1000, None),  # not root: nothing to escalate to
    (0, 0o040755, 0, None),
    (0, 0o040777, 0, "group or others"),
    (0, 0o020666, 0, None),  # /dev/null as --config
])
def test_trust_problem(uid: int, mode: int, euid: int, refused: str | None) -> None:
    problem = trust_problem(FakeStat(uid, mode), euid)  # type: ignore[arg-type]
    assert (problem is None) if refused is None else (problem is not None and refused in problem)


def test_root_refuses_group_writable_policy(tmp_path: Path) -> None:
    f = write(tmp_path / "p.yaml", "version: 1\nrules: []\n", mode=0o664)
    owner = os.stat(f).st_uid
    if owner == 0:
        with pytest.raises(ConfigError, match="writable by group or others"):
            load_policies([str(f)], hostname="h", euid=0)
        f.chmod(0o644)
        assert load_policies([str(f)], hostname="h", euid=0).loaded == [str(f)]
    else:
        with pytest.raises(ConfigError, match="not root"):
            load_policies([str(f)], hostname="h", euid=0)


def test_root_refuses_a_writable_policy_directory(tmp_path: Path) -> None:
    d = tmp_path / "policies.d"
    d.mkdir()
    d.chmod(0o777)
    with pytest.raises(ConfigError, match="refused directory"):
        load_policies([str(d)], hostname="h", euid=0)


@pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")
def test_root_refuses_a_policy_owned_by_another_user(tmp_path: Path) -> None:
    f = write(tmp_path / "p.yaml", "version: 1\nrules: []\n")
    os.chown(f, 1000, 1000)
    with pytest.raises(ConfigError, match="owned by uid 1000"):
        load_policies([str(f)], hostname="h", euid=0)


# -- shipped policies --------------------------------------------------------------
@pytest.mark.parametrize("name", ["default.yaml", "desktop.yaml", "server.yaml"])
def test_shipped_policies_are_valid_and_quiet(name: str) -> None:
    res = check_text(name, (POLICIES / name).read_text(), "anyhost", lambda u: {"root": 0}.get(u))
    assert not res.errors and not res.refused and not res.warnings, [str(x) for x in
                                                                     (*res.errors, *res.warnings)]
    assert res.rules


def test_every_shipped_rule_has_a_comment_above_it() -> None:
    for path in POLICIES.glob("*.yaml"):
        lines = path.read_text().splitlines()
        for i, line in enumerate(lines):
            if line.strip().startswith("- name:"):
                above = [x.strip() for x in lines[max(0, i - 3):i]]
                assert any(x.startswith("#") for x in above), f"{path.name}:{i + 1} has no comment"


def test_desktop_policy_prefers_tabs_and_protects_the_compositor() -> None:
    ps = PolicySet(check_text("d", (POLICIES / "desktop.yaml").read_text(), "h", resolve).rules)
    tab = proc(comm="chrome", cmdline="/opt/google/chrome/chrome --type=renderer --lang=en", oom_score=300)
    browser = proc(comm="chrome", cmdline="/opt/google/chrome/chrome", oom_score=300)
    assert ps.evaluate(tab).adjust == 300 and ps.evaluate(browser).adjust == 0
    assert ps.evaluate(proc(comm="code", cmdline="/usr/share/code/code --type=utility")).adjust == 200
    assert ps.evaluate(proc(comm="Isolated Web Co")).adjust == 300
    assert ps.evaluate(proc(comm="cc1plus")).adjust == 300
    assert ps.evaluate(proc(exe="/usr/bin/gnome-shell", uid=1000)).protect
    assert not ps.evaluate(proc(comm="gnome-shell", exe="/home/u/gnome-shell")).protect
    dnf = proc(uid=0, exe="/usr/bin/python3.12", cmdline="/usr/bin/python3 /usr/bin/dnf upgrade")
    assert ps.evaluate(dnf).protect
    assert not ps.evaluate(proc(uid=1000, exe="/usr/bin/python3.12", cmdline=dnf.cmdline)).protect


def test_server_policy_batch_jobs_go_first_as_a_group() -> None:
    ps = PolicySet(check_text("s", (POLICIES / "server.yaml").read_text(), "h", resolve).rules)
    v = ps.evaluate(proc(cgroup="/system.slice/nightly-batch.service"))
    assert v.adjust == 500 and v.kill_group
    assert ps.evaluate(proc(exe="/usr/bin/containerd-shim-runc-v2", uid=0)).protect
    assert ps.evaluate(proc(parent_comm="cron")).adjust == 200


# -- the daemon: start-up report and reload keeping the last good set ----------------
# memory far from any level: the ticks act on nothing
HALF_FREE = MemSample(mem_total_kib=16 << 20, mem_available_kib=8 << 20, swap_total_kib=0, swap_free_kib=0)


def test_reload_keeps_the_last_good_policy(tmp_path: Path) -> None:
    from pyoomd.daemon import Daemon
    from pyoomd.sense.procfs import Procfs

    f = write(tmp_path / "p.yaml", "version: 1\nrules: [{name: old, match: {comm: hog}, adjust: 500}]\n")
    load = lambda s: load_policies([str(tmp_path)], hostname="h", euid=1000)
    log = Log()
    d = Daemon(Settings(), Procfs(str(tmp_path / "noproc")), FakeSampler(HALF_FREE), log)  # type: ignore[arg-type]
    d.use_policies(load(None))
    d.reloader = Settings
    d.policy_loader = load
    assert d.policy.evaluate(proc(comm="hog")).rules == ("old",)

    f.write_text("version: 1\nrules: [{name: new, match: {comm: '('}, adjust: 1}]\n")
    d.reload()
    (failed,) = log.named("reload_failed")
    assert "p.yaml:2:35:" in failed["error"] and "invalid regex" in failed["error"]
    assert failed["policy_rules"] == ["old"]
    assert d.policy.evaluate(proc(comm="hog")).rules == ("old",)

    f.write_text("version: 1\nrules: [{name: new, match: {comm: hog}, adjust: 600}]\n")
    d.reload()
    (done,) = log.named("reloaded")
    assert done["policy_rules"] == ["new"]
    assert d.policy.evaluate(proc(comm="hog")).adjust == 600


def test_startup_lists_loaded_skipped_and_refused(tmp_path: Path) -> None:
    from pyoomd.daemon import Daemon
    from pyoomd.sense.procfs import Procfs

    write(tmp_path / "a.yaml", """
        version: 1
        rules:
          - {name: good, match: {comm: x}, adjust: 1}
          - {name: by-name, match: {comm: sshd}, protect: true}
        """)
    write(tmp_path / "b.yaml", "version: 1\nhosts: [elsewhere]\nrules: []\n")
    log = Log()
    proc_root = tmp_path / "proc"
    proc_root.mkdir()
    d = Daemon(Settings(), Procfs(str(proc_root)), FakeSampler(HALF_FREE), log)  # type: ignore[arg-type]
    d.use_policies(load_policies([str(tmp_path)], hostname="h", euid=1000))
    d.startup()
    (start,) = log.named("startup")
    assert [os.path.basename(f) for f in start["policy_files"]] == ["a.yaml"]
    assert [os.path.basename(s["file"]) for s in start["policy_skipped"]] == ["b.yaml"]
    assert start["policy_rules"] == ["good"]
    (refused,) = log.named("policy_rule_refused")
    assert refused["line"] == 4 and "by-name" in refused["message"]


def test_startup_says_when_there_is_no_policy(tmp_path: Path) -> None:
    from pyoomd.daemon import Daemon
    from pyoomd.sense.procfs import Procfs

    log = Log()
    proc_root = tmp_path / "proc"
    proc_root.mkdir()
    d = Daemon(Settings(), Procfs(str(proc_root)), FakeSampler(HALF_FREE), log)  # type: ignore[arg-type]
    d.use_policies(load_policies([str(tmp_path / "policies.d")], hostname="h", euid=1000, missing_ok=True))
    d.startup()
    (start,) = log.named("startup")
    assert start["policy"] == "none" and start["policy_missing"] == [str(tmp_path / "policies.d")]


@pytest.mark.parametrize("text, needle", [
    ("[" * 20000, "nested too deeply"),
    ("!!python/object:os.system {}\n", "constructor"),
    ("? [a]\n: 1\n", "unhashable"),
    ("version: 1\n---\nversion: 1\n", "another document"),
    ("version: 1\nrules: [{name: r, match: {user: 99999999999}, adjust: 1}]\n", "uid out of range"),
])
def test_hostile_yaml_is_a_config_error(text: str, needle: str) -> None:
    res = check_text("x.yaml", text, None, resolve)
    assert len(res.errors) == 1 and needle in res.errors[0].message


def test_a_user_of_non_ascii_digits_is_a_name_not_a_crash() -> None:
    # "²".isdigit() is True but int("²") raises: it is a (non-existent) user name.
    res = check_text("p.yaml", "version: 1\nrules:\n  - {name: r, match: {user: \"\u00b2\"}, adjust: 1}\n")
    assert not res.errors and res.rules[0].matcher("user") == frozenset()
    assert "does not exist on this host" in res.warnings[0].message
