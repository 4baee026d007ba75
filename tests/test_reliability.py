"""Reliability (issue 7): the daemon's tick survives whatever /proc says,
the config loader turns any YAML into Settings or a ConfigError, pyoomd
never chooses itself or its parent, a zombie leader with live threads still
counts, and a reload that fails keeps what was in force.

What tests/test_parse_fuzz.py (parsers), tests/test_policy_fuzz.py (policy
loader) and tests/test_cli_fuzz.py (flags) cover is not repeated here."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from fuzzing import fuzz
from helpers import BASE, FakeProc, FakeSampler, build, stat_line, status_text
from hypothesis import given
from hypothesis import strategies as st
from logcapture import Log

from pyoomd import errors
from pyoomd.cli import dispatch
from pyoomd.daemon import Daemon
from pyoomd.errors import ConfigError, ParseError
from pyoomd.judge.rank import NoPolicy, score
from pyoomd.model import Level
from pyoomd.policy.load import load_policies
from pyoomd.sense import snapshot
from pyoomd.sense.procfs import Procfs
from pyoomd.settings.load import load_config, settings_from_dict, settings_from_text
from pyoomd.settings.schema import Settings

# Events a tick may log; anything else (an "observer_failed", a traceback) is a bug.
TICK_EVENTS = {"low_memory", "kill", "kill_skipped", "no_candidate", "victim_exited", "victim_stuck",
               "escalate", "killed_process", "memory_recovered", "sample_error", "cgroup_choice_empty"}



class HostileProcfs(Procfs):
    """A fixture tree whose reads fail as a real /proc's can: EACCES (hidepid,
    another user's exe), ENOENT/ESRCH (gone between listing and reading)."""

    def __init__(self, root: str, faults: dict[tuple[int, str], type[OSError]]) -> None:
        super().__init__(root)
        self.faults = faults

    def read_pid(self, pid: int, name: str, limit: int = 1 << 20) -> bytes:
        fault = self.faults.get((pid, name))
        if fault is not None:
            raise fault(13 if fault is PermissionError else 2, os.strerror(13 if fault is PermissionError else 2))
        return super().read_pid(pid, name, limit)

    def readlink_pid(self, pid: int, name: str) -> str:
        if (pid, name) in self.faults:
            raise PermissionError(13, "Permission denied")
        return super().readlink_pid(pid, name)


def dry_daemon(procfs: Procfs, sampler: Any = None, log: Log | None = None) -> Daemon:
    s = settings_from_dict({"dry_run": True})
    return Daemon(s, procfs, sampler or FakeSampler(), log or Log())


# -- the tick survives hostile and broken /proc ---------------------------------------
FILES = ["stat", "status", "oom_score", "oom_score_adj", "cmdline", "cgroup", "comm"]
TOKENS = [b"(", b")", b" ", b"\n", b"\0", b"\xff", b"Z", b"S", b"-1000", b"1000", b"Uid:", b"Tgid:",
          b"VmRSS:", b"0::/", b"18446744073709551616", b"kB", b"1", b"-"]
hostile_bytes = st.one_of(st.binary(max_size=200), st.lists(st.sampled_from(TOKENS), max_size=40).map(b"".join))


@st.composite
def hostile_tree(draw: st.DrawFn) -> tuple[list[tuple[int, dict[str, bytes | None]]], dict[tuple[int, str], Any]]:
    procs = []
    faults: dict[tuple[int, str], Any] = {}
    for i in range(draw(st.integers(1, 6))):
        pid = BASE + i
        state = draw(st.sampled_from(["S", "R", "Z", "D"]))
        valid = {"stat": stat_line(pid, draw(st.binary(max_size=20)).replace(b"\n", b""), state),
                 "status": status_text(pid, "p", draw(st.integers(0, 70000)), draw(st.integers(0, 10**9))),
                 "oom_score": str(draw(st.integers(0, 2000))).encode(),
                 "oom_score_adj": str(draw(st.integers(-1000, 1000))).encode(),
                 "cmdline": draw(st.binary(max_size=60)), "cgroup": b"0::/user.slice\n", "comm": b"p\n"}
        files: dict[str, bytes | None] = {}
        for name in FILES:
            kind = draw(st.sampled_from(["valid", "valid", "valid", "garbage", "missing", "eacces", "gone"]))
            files[name] = {"valid": valid[name], "garbage": draw(hostile_bytes), "missing": None}.get(
                kind, valid[name])
            if kind == "eacces":
                faults[(pid, name)] = PermissionError
            elif kind == "gone":
                faults[(pid, name)] = FileNotFoundError
        procs.append((pid, files))
    return procs, faults


def write_tree(root: Path, procs: list[tuple[int, dict[str, bytes | None]]]) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for pid, files in procs:
        d = root / str(pid)
        d.mkdir()
        for name, data in files.items():
            if data is not None:
                (d / name).write_bytes(data)
        os.symlink("/usr/bin/p", d / "exe")


@fuzz(150, 300, slow=True)
@given(hostile_tree())
def test_tick_survives_any_proc_tree(tree: tuple[list[Any], dict[Any, Any]]) -> None:
    procs, faults = tree
    with tempfile.TemporaryDirectory() as tmp:
        write_tree(Path(tmp) / "proc", procs)
        procfs = HostileProcfs(str(Path(tmp) / "proc"), faults)
        log = Log()
        d = dry_daemon(procfs, log=log)
        for _ in range(3):
            pause = d.tick()
            assert 0 < pause <= 60
        assert {ev for ev, _ in log.events} <= TICK_EVENTS, log.events
        assert d.state.level == Level.KILL


@pytest.mark.parametrize("error", [ParseError("/proc/meminfo", "MemAvailable", 9, "greater than MemTotal"),
                                   FileNotFoundError(2, "No such file or directory"),
                                   PermissionError(13, "Permission denied")])
def test_a_failing_sample_is_logged_once_and_the_loop_goes_on(tmp_path: Path, error: Exception) -> None:
    build(tmp_path / "proc", [FakeProc(BASE + 1, 500)])
    sampler = FakeSampler()
    log = Log()
    d = dry_daemon(Procfs(str(tmp_path / "proc")), sampler, log)
    sampler.error = error
    pauses = [d.tick() for _ in range(50)]
    assert all(p > 0 for p in pauses)
    assert len(log.named("sample_error")) == 1  # rate-limited: a broken file cannot flood the journal
    sampler.error = None
    d.tick()
    # the next good sample acts again (a fixture pid cannot be opened: skipped)
    assert [k["pid"] for k in log.named("kill_skipped")] == [BASE + 1]


def test_eacces_on_every_file_of_a_process_only_hides_that_process(tmp_path: Path) -> None:
    build(tmp_path / "proc", [FakeProc(BASE + 1, 900, comm=b"secret"), FakeProc(BASE + 2, 100, comm=b"plain")])
    faults = {(BASE + 1, n): PermissionError for n in FILES}
    table = snapshot.scan(HostileProcfs(str(tmp_path / "proc"), faults), score, 0, top_n=5, exhaustive=True)
    assert [c.proc.comm for c in table.candidates] == ["plain"]


def test_eacces_on_optional_files_keeps_the_candidate(tmp_path: Path) -> None:
    build(tmp_path / "proc", [FakeProc(BASE + 1, 900)])
    faults = {(BASE + 1, n): PermissionError for n in ("cmdline", "cgroup", "exe")}
    info = snapshot.read_proc(HostileProcfs(str(tmp_path / "proc"), faults), BASE + 1)
    assert info is not None and info.oom_score == 900 and info.exe is None and info.cgroup is None


# -- zombies ------------------------------------------------------------------------------
def add_thread(root: Path, pid: int, tid: int, state: str, rss_kib: int) -> None:
    t = root / str(pid) / "task" / str(tid)
    t.mkdir(parents=True)
    (t / "stat").write_bytes(stat_line(tid, b"worker", state))
    (t / "status").write_bytes(status_text(pid, "worker", 1000, rss_kib))


def test_zombie_leader_with_a_live_thread_still_counts(tmp_path: Path) -> None:
    # What the kernel shows (seen on 6.18): the leader's stat says Z and its
    # status has no VmRSS; task/TID of the live thread has the memory.
    root = tmp_path / "proc"
    build(root, [FakeProc(BASE + 1, 672, comm=b"threads", state="Z", rss_kib=0),
                 FakeProc(BASE + 2, 100)])
    (root / str(BASE + 1) / "status").write_bytes(status_text(BASE + 1, "threads", 1000, 0).replace(
        b"VmRSS:", b"X:"))
    add_thread(root, BASE + 1, BASE + 1, "Z", 0)
    add_thread(root, BASE + 1, BASE + 10, "S", 218756)
    info = snapshot.read_proc(Procfs(str(root)), BASE + 1)
    assert info is not None and info.rss_kib == 218756 and info.oom_score == 672
    table = snapshot.scan(Procfs(str(root)), score, 0, top_n=1)
    assert [c.proc.pid for c in table.candidates][:1] == [BASE + 1]


def test_a_real_zombie_is_never_a_candidate(tmp_path: Path) -> None:
    root = tmp_path / "proc"
    build(root, [FakeProc(BASE + 1, 900, state="Z"), FakeProc(BASE + 2, 100)])
    add_thread(root, BASE + 1, BASE + 1, "Z", 0)
    table = snapshot.scan(Procfs(str(root)), score, 0, top_n=5, exhaustive=True)
    assert [c.proc.pid for c in table.candidates] == [BASE + 2]


# -- never ourselves, never our parent ---------------------------------------------------
def test_self_and_parent_are_never_candidates_even_when_largest(tmp_path: Path) -> None:
    me, parent = os.getpid(), os.getppid()
    root = tmp_path / "proc"
    build(root, [FakeProc(me, 2000, comm=b"pyoomd", rss_kib=10**8), FakeProc(parent, 1999, rss_kib=10**8),
                 FakeProc(BASE + 1, 10, comm=b"small")])
    log = Log()
    d = dry_daemon(Procfs(str(root)), log=log)
    assert [c.proc.pid for c in d.scan(top_n=5)] == [BASE + 1]
    d.tick()
    touched = {kw.get("pid") for _, kw in log.events}
    assert me not in touched and parent not in touched
    assert [k["pid"] for k in log.named("kill") + log.named("kill_skipped")][:1] == [BASE + 1]


def test_explain_says_pyoomd_itself_is_never_a_candidate(capsys: pytest.CaptureFixture[str]) -> None:
    # Against the real /proc: explain only reads.
    assert dispatch.main(["explain", "--json", "--config", os.devnull, str(os.getpid())]) == errors.EXIT_OK
    out = capsys.readouterr().out
    assert "never a candidate: pid 1, pyoomd itself or its parent" in out


def test_rank_never_lists_itself_or_its_parent(capsys: pytest.CaptureFixture[str]) -> None:
    import json

    assert dispatch.main(["rank", "--json", "--top", "100000", "--config", os.devnull]) == errors.EXIT_OK
    data = json.loads(capsys.readouterr().out)
    pids = {c["pid"] for c in data["candidates"]}
    assert os.getpid() not in pids and os.getppid() not in pids and 1 not in pids


# -- reloads that fail keep what was in force -----------------------------------------------
POLICY = "version: 1\nrules: [{name: old, match: {comm: hog}, adjust: 500}]\n"


@pytest.mark.parametrize("break_it", ["delete", "invalid", "binary"])
def test_policy_file_broken_during_reload_keeps_the_old_set(tmp_path: Path, break_it: str) -> None:
    f = tmp_path / "p.yaml"
    f.write_text(POLICY)
    load = lambda s: load_policies([str(f)], hostname="h", euid=1000)
    log = Log()
    d = dry_daemon(Procfs(str(tmp_path / "noproc")), log=log)
    d.use_policies(load(None))
    d.reloader = Settings
    d.policy_loader = load
    if break_it == "delete":
        f.unlink()
    elif break_it == "invalid":
        f.write_text("version: 1\nrules: [{name: new, match: {comm: '('}, adjust: 1}]\n")
    else:
        f.write_bytes(b"\0\xff\xfe")
    d.reload()
    (failed,) = log.named("reload_failed")
    assert str(f) in failed["error"] and failed["policy_rules"] == ["old"]
    assert d.policy.max_bonus == 500


def test_config_file_deleted_during_reload_keeps_the_old_settings(tmp_path: Path) -> None:
    cfg = tmp_path / "config.yaml"
    cfg.write_text("kill: {grace: 2s}\n")
    log = Log()
    d = Daemon(load_config(str(cfg)), Procfs(str(tmp_path / "noproc")), FakeSampler(), log)
    d.reloader = lambda: load_config(str(cfg))
    cfg.unlink()
    d.reload()
    assert log.named("reload_failed") and d.settings.kill.grace == 2.0
    assert d.tick() > 0  # and it keeps running, even with /proc unlistable
    assert log.named("no_candidate") or log.named("act_error")


def test_the_log_destination_gone_does_not_stop_the_loop(tmp_path: Path) -> None:
    from pyoomd.report.log import configure, get_logger

    r, w = os.pipe()
    os.close(r)  # the journal (the reader) is gone: every write gets EPIPE
    stream = os.fdopen(w, "w")
    try:
        configure("json", stream)
        build(tmp_path / "proc", [FakeProc(BASE + 1, 500)])
        d = dry_daemon(Procfs(str(tmp_path / "proc")), log=get_logger())
        for _ in range(3):
            assert d.tick() > 0
        try:
            stream.close()  # even a closed file object
        except BrokenPipeError:
            pass
        assert d.tick() > 0
    finally:
        configure("json")


# -- the config loader, fuzzed ------------------------------------------------------------
CONFIG_KEYS = ["memory", "swap", "sampling", "kill", "dry_run", "log_format", "reader", "policy_dirs",
               "term", "warn", "grace", "kill_timeout", "min_interval", "max_interval", "hooks", "pre_kill",
               "psi", "cgroups", "metrics", "notify", "bogus"]
scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=True),
                    st.text(max_size=10),
                    st.sampled_from(["10%", "5%", "2G", "512M", "1s", "2ms", "inf", "nan", "-1", "/bin/true",
                                     "json", "auto", "cffi", "101%", "0", "1e999", "\x00"]))
documents = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.one_of(st.sampled_from(CONFIG_KEYS), st.text(max_size=5)),
                                                 inner, max_size=5)), max_leaves=25)
config_docs = st.dictionaries(st.sampled_from(CONFIG_KEYS), documents, max_size=5)


def config_or_error(text: str) -> None:
    try:
        s = settings_from_text("fuzz.yaml", text)
    except ConfigError as e:
        assert e.file == "fuzz.yaml" and str(e).startswith("fuzz.yaml")
        return
    th = s.compile(16 << 20, 4 << 20)  # a valid config always compiles
    assert 0 <= th.mem_kill_kib <= th.mem_term_kib <= 16 << 20


DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


def dump(data: Any) -> str | None:
    try:
        return yaml.dump(data, Dumper=DUMPER, allow_unicode=True)  # libyaml: ~5x faster
    except (yaml.YAMLError, ValueError, UnicodeEncodeError):
        return None


@fuzz(400, 2000, slow=True)  # ~8 ms an example: the config loader's 10,000 are the soup's below
@given(st.one_of(config_docs, documents))
def test_random_config_documents_load_or_raise_config_error(data: Any) -> None:
    text = dump(data)
    if text is not None:
        config_or_error(text)


@fuzz(300)
@given(st.text(alphabet=st.sampled_from(list("memory: 10%\nkill{}[],&*!|>'\"#-\t ")), max_size=80))
def test_yaml_punctuation_soup_as_config(text: str) -> None:
    config_or_error(text)


@pytest.mark.parametrize("text", ["[" * 20000, "memory: " + "{a: " * 3000, "!!python/object:os.system {}\n",
                                  "a: 1\n---\nb: 2\n", "? [a]\n: 1\n", "\ufeff\x00"])
def test_hostile_config_yaml_is_a_config_error_with_a_line(text: str) -> None:
    with pytest.raises(ConfigError) as e:
        settings_from_text("c.yaml", text)
    assert str(e.value).startswith("c.yaml:")
    assert e.value.line is not None


def test_random_config_bytes_on_disk(tmp_path: Path) -> None:
    import random

    rng = random.Random(7)
    for i in range(200):
        f = tmp_path / f"c{i}.yaml"
        f.write_bytes(bytes(rng.randrange(256) for _ in range(rng.randrange(1, 200))))
        f.chmod(0o644)
        try:
            load_config(str(f))
        except ConfigError as e:
            assert e.file == str(f)


def test_noop_policy_is_what_a_daemon_without_policies_uses(tmp_path: Path) -> None:
    d = dry_daemon(Procfs(str(tmp_path)))
    assert isinstance(d.policy, NoPolicy)


def test_no_second_victim_while_the_first_ones_memory_comes_back(tmp_path: Path) -> None:
    """After a victim exited, the next victim waits until MemAvailable rose by
    half of the first one's size or kill.release_timeout passed."""
    procfs = build(tmp_path / "proc", [FakeProc(pid=4242, oom_score=900)])
    now = [100.0]
    log = Log()
    d = Daemon(load_config(None, {"dry_run": True}), procfs, FakeSampler(), log, clock=lambda: now[0])
    d.state.release = (now[0] + 1.0, 1 << 10, 512 << 10)  # 512 MiB still expected back
    acted = lambda: log.named("kill") + log.named("kill_skipped")  # (pid 4242 is not real)
    d.tick()
    assert acted() == []  # still within the release timeout: no new victim is chosen
    now[0] += 1.5
    d.tick()
    assert [k["pid"] for k in acted()] == [4242] and d.state.release is None
