"""The light `pyoomd run` path: the loop imports no heavy library, the
compiled plan gives back the Settings it was compiled from, the compile
child's errors and exit codes pass through, and SIGHUP recompiles."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from helpers import ENV, FIXTURE_PROC, json_events, wait_for_event
from logcapture import Log

from pyoomd.cli.earlyoom_flags import with_flag_rules
from pyoomd.cli.entry import subcommand
from pyoomd.daemon import Daemon
from pyoomd.daemon.launch import compile_plan
from pyoomd.errors import ConfigError
from pyoomd.judge.decide import Judge
from pyoomd.judge.pressure import compile_rule
from pyoomd.model import MemSample, ProcInfo
from pyoomd.policy.load import load_policies
from pyoomd.policy.rules import loaded_from_plan, loaded_to_plan
from pyoomd.sense.procfs import Procfs
from pyoomd.sense.sample import Sampler
from pyoomd.settings.load import settings_from_dict
from pyoomd.settings.plan import settings_from_plan, settings_to_plan
from pyoomd.settings.schema import Settings

REPO = Path(__file__).resolve().parent.parent
# structlog is the loop's logging pipeline (report/log.py), and it imports
# asyncio and ssl: what that costs is measured in the README.  psutil: not in
# the idle loop; it comes with the first read of a likely victim's
# frees_kib, during an approach to TERM (test below, sense/facts.py).
HEAVY = ("pydantic", "pydantic_core", "yaml", "argparse", "psutil",
         "pyoomd.settings.load", "pyoomd.policy.load",
         # the command line, but for its light package and cli/entry.py (the console script)
         "pyoomd.cli.dispatch", "pyoomd.cli.arguments", "pyoomd.cli.options", "pyoomd.cli.earlyoom_flags",
         "pyoomd.cli.compile_child", "pyoomd.cli.commands", "pyoomd.cli.migrate", "pyoomd.cli.scoring",
         "pyoomd.cli.rank", "pyoomd.cli.explain", "pyoomd.cli.watch", "pyoomd.cli.traces", "pyoomd.cli.output",
         # the flight recorder's file side: only when a trace is written (or replayed)
         "pyoomd.trace", "pyoomd.cli.replay", "gzip")


def _config(tmp_path: Path, text: str) -> Path:
    cfg = tmp_path / "config.yaml"
    cfg.write_text(text)
    cfg.chmod(0o644)
    return cfg


BASE_CONFIG = "psi: {wakeup: {enabled: false}}\nstatus: {socket: %s}\npolicy_dirs: [%s]\n"


# -- what the loop imports -------------------------------------------------------------
def test_the_loop_imports_no_heavy_library(tmp_path: Path) -> None:
    """A process that compiles a plan (in its child), builds the daemon from
    it with every default observer, ticks, and lists its modules."""
    cfg = _config(tmp_path, BASE_CONFIG % (tmp_path / "status.sock", REPO / "policies"))
    code = f"""
import json, sys
from pyoomd.daemon import launch as loop
plan = loop.compile_plan(["--procfs", {FIXTURE_PROC!r}, "run", "--dry-run", "--log-format", "json",
                          "--config", {str(cfg)!r}, "--prefer", "^hog$"], capture_stderr=True)
daemon, stops = loop.build(plan, lambda: plan)
daemon.tick()
daemon.reload()
for stop in stops:
    stop()
print(json.dumps(sorted(sys.modules)))
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV, timeout=60,
                       check=False)
    assert r.returncode == 0, r.stderr
    modules = set(json.loads(r.stdout.splitlines()[-1]))
    assert "pyoomd.daemon" in modules and "pyoomd.report.control" in modules  # it did build the daemon
    assert "pyoomd.report.recorder" in modules  # the recorder is on by default
    assert '"event": "reloaded"' in r.stderr
    assert not modules & set(HEAVY), sorted(modules & set(HEAVY))
    assert not [m for m in modules if m.split(".")[0] in ("pydantic", "yaml", "psutil")]
    assert "structlog" in modules


def test_psutil_comes_with_the_first_frees_read_not_before(tmp_path: Path) -> None:
    """The daemon built from a plan and ticking idle has no psutil (above);
    its first read of what a likely victim would free (Daemon._prefetch_frees,
    between WARN and TERM) imports it, in the FreesReader's thread: the idle
    daemon does not pay for it (README, Memory of the running daemon), and
    the loop never waits for the import or the read."""
    cfg = _config(tmp_path, BASE_CONFIG % (tmp_path / "status.sock", REPO / "policies"))
    code = f"""
import os, sys, threading, time
from pyoomd.daemon import launch as loop
from pyoomd.sense import snapshot
plan = loop.compile_plan(["run", "--dry-run", "--log-format", "json", "--config", {str(cfg)!r}],
                         capture_stderr=True)
daemon, stops = loop.build(plan, lambda: plan)
daemon.tick()
print("idle", "psutil" in sys.modules, daemon.frees.threaded)
me = snapshot.read_proc(daemon.procfs, os.getpid())
daemon.frees.want(me)
for _ in range(500):
    if daemon.frees.reading(me.identity) is not None:
        break
    time.sleep(0.01)
r = daemon.frees.reading(me.identity)
print("read", "psutil" in sys.modules, r is not None and r.facts.frees_kib is not None)
daemon.frees.close()
for stop in stops:
    stop()
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV, timeout=60,
                       check=False)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[-2:] == ["idle False True", "read True True"], r.stdout


def test_python_m_pyoomd_run_goes_the_light_way() -> None:
    assert subcommand(["run", "--dry-run"]) == "run"
    assert subcommand(["--procfs", "/x", "run"]) == "run"
    assert subcommand(["--proc", "/x", "run"]) == "run"  # argparse's prefix matching
    assert subcommand(["--procfs=/x", "run"]) == "run"
    assert subcommand(["--procfs", "run", "rank"]) == "rank"
    assert subcommand(["rank", "run"]) == "rank"
    assert subcommand(["--help", "run"]) is None
    assert subcommand(["--version"]) is None
    assert subcommand([]) is None


# -- exit codes and messages of the compile child ------------------------------------------
def _pyoomd(*argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pyoomd", *argv], capture_output=True, text=True, env=ENV,
                          timeout=timeout, check=False, cwd="/")


def test_run_help_and_bad_flags_pass_through() -> None:
    r = _pyoomd("run", "--help")
    assert r.returncode == 0 and "--dry-run" in r.stdout and not r.stderr
    r = _pyoomd("run", "--bad-flag")
    assert r.returncode == 2 and "pyoomd: error: unrecognized arguments: --bad-flag" in r.stderr
    r = _pyoomd("run", "-m", "200")
    assert r.returncode == 2 and "200" in r.stderr


def test_run_config_error_exits_78_with_file_and_line(tmp_path: Path) -> None:
    cfg = _config(tmp_path, "memory:\n  term: 10%\n  trem: 5%\n")
    r = _pyoomd("--procfs", FIXTURE_PROC, "run", "--dry-run", "--config", str(cfg))
    assert r.returncode == 78
    assert f"pyoomd: config error: {cfg}:3: memory.trem" in r.stderr


def test_run_errors_found_by_the_loop_keep_their_exit_codes(tmp_path: Path) -> None:
    cfg = _config(tmp_path, BASE_CONFIG % ("null", tmp_path / "absent"))
    r = _pyoomd("--procfs", "/nonexistent", "run", "--dry-run", "--config", str(cfg))
    assert r.returncode == 72 and "/nonexistent/meminfo" in r.stderr
    r = _pyoomd("--procfs", FIXTURE_PROC, "run", "--dry-run", "--config", str(cfg), "-m", "10,20")
    assert r.returncode == 78 and "memory.kill" in r.stderr


def test_compile_plan_reports_a_config_error_as_file_line(tmp_path: Path) -> None:
    from pyoomd.daemon.launch import CompileFailed

    cfg = _config(tmp_path, "kill:\n  grace: soon\n")
    with pytest.raises(CompileFailed) as exc:
        compile_plan(["run", "--config", str(cfg)], capture_stderr=True)
    assert exc.value.exit_code == 78
    assert isinstance(exc.value.error, ConfigError)
    assert str(exc.value.error).startswith(f"{cfg}:2: kill.grace: not a duration")


# -- the plan round trip -------------------------------------------------------------------
SETTINGS_DOCS: list[dict[str, Any]] = [
    {},
    {"memory": {"term": ["8%", "2G"], "kill": "1G", "warn": "30%"}, "swap": {"term": "0", "kill": 0},
     "sampling": {"min_interval": "5ms", "max_interval": "500ms"}, "kill": {"grace": "2s", "settle": 0.1},
     "growth": {"enabled": False, "weight": 3, "window": "1m", "follow_top": 4},
     "psi": {"kill": "60%", "wakeup": {"kind": "full", "window": "2s", "stall": "100ms"}},
     "cgroups": {"kill_whole": ["/system.slice/build.service/"]}, "cgroup_choice": {"enabled": True, "by": "memory"},
     "hooks": {"pre_kill": "/bin/true", "post_kill": [["/usr/bin/logger", "-t", "pyoomd"]]},
     "notify": {"enabled": True, "min_interval": "1m"}, "metrics": {"listen": "127.0.0.1:9101"},
     "status": {"socket": None}, "report_interval": 60, "raise_priority": True, "dry_run": True,
     "log_format": "json", "reader": "python", "policy_dirs": ["/a", "/b"], "report_top": 2},
]


def _outcome(f: Any, *args: Any) -> Any:
    try:
        return f(*args)
    except ConfigError as e:
        return str(e)


def _same(ours: Any, theirs: Any, path: str) -> None:
    if dataclasses.is_dataclass(theirs):
        for f in dataclasses.fields(theirs):
            _same(getattr(ours, f.name), getattr(theirs, f.name), f"{path}.{f.name}")
        return
    assert ours == theirs, path
    assert type(ours) is type(theirs), path


@pytest.mark.parametrize("doc", SETTINGS_DOCS)
def test_settings_round_trip_through_the_plan(doc: dict[str, Any]) -> None:
    s = settings_from_dict(doc)
    plan = json.loads(json.dumps(settings_to_plan(s)))
    r = settings_from_plan(plan)
    assert isinstance(r, Settings)
    assert r == s
    assert settings_to_plan(r) == plan
    _same(r, s, "settings")  # every attribute path, with the same values and types
    assert r.psi.wakeup.window == s.psi.wakeup.window
    for total in ((16318708, 8388604), (1024, 0), (64 << 20, 1 << 20)):
        assert _outcome(r.compile, *total) == _outcome(s.compile, *total)
    th = s.compile(16318708, 8388604)
    sample = MemSample(mem_total_kib=16318708, mem_available_kib=int(th.mem_warn_kib * 0.9),
                       swap_total_kib=8388604, swap_free_kib=100)
    a = Judge(th, s.sampling, compile_rule(s.psi, th.mem_warn_kib))
    b = Judge(r.compile(16318708, 8388604), r.sampling, compile_rule(r.psi, th.mem_warn_kib))
    assert a.judge(sample, 1.0) == b.judge(sample, 1.0)
    with pytest.raises(AttributeError):
        r.kill.grace = 1.0  # type: ignore[misc]


def test_a_daemon_from_the_plan_starts_as_one_from_settings(tmp_path: Path) -> None:
    """Daemon takes Settings validated from a mapping (tests) or rebuilt
    from the plan (the loop): the startup event is the same."""
    s = settings_from_dict(SETTINGS_DOCS[1] | {"psi": {}, "cgroup_choice": {}, "memory": {}})
    events = []
    for settings in (s, settings_from_plan(json.loads(json.dumps(settings_to_plan(s))))):
        log = Log()
        d = Daemon(settings, Procfs(FIXTURE_PROC), Sampler(Procfs(FIXTURE_PROC), "python"), log)
        d.startup()
        (startup,) = [kw for ev, kw in log.events if ev == "startup"]
        startup.pop("pid"), startup.pop("oom_score_adj"), startup.pop("mlockall"), startup.pop("self_test")
        events.append(startup)
    assert events[0] == events[1]


def _proc(**kw: Any) -> ProcInfo:
    base: dict[str, Any] = {"pid": 4242, "comm": "chrome", "ppid": 1, "state": "S", "uid": 1000, "oom_score": 600, "oom_score_adj": 300,
                            "rss_kib": 1 << 20, "swap_kib": 0, "start_time": 1, "exe": "/usr/lib/chromium/chrome",
                            "cmdline": "chrome --type=renderer", "cgroup": "/user.slice/app.slice/x.scope",
                            "parent_comm": "chrome", "pgid": 4242}
    return ProcInfo(**(base | kw))


def test_policies_round_trip_through_the_plan(tmp_path: Path) -> None:
    from pyoomd.cli.arguments import build_parser

    args = build_parser().parse_args(["run", "--prefer", "^hog$", "--avoid", "^sshd$", "--ignore-root-user",
                                      "-g", "--sort-by-rss"])
    loaded = with_flag_rules(load_policies([str(REPO / "policies")], hostname="h", euid=os.geteuid()), args)
    assert len(loaded.policy.rules) > 5
    back = loaded_from_plan(json.loads(json.dumps(loaded_to_plan(loaded))))
    assert back.summary() == loaded.summary()
    assert back.warnings == loaded.warnings and back.refused == loaded.refused
    assert back.policy.inner.rules == loaded.policy.inner.rules  # --sort-by-rss wraps both
    assert back.policy.max_bonus == loaded.policy.max_bonus
    procs = [_proc(), _proc(comm="hog", exe="/usr/bin/hog"), _proc(comm="sshd", uid=0, exe="/usr/sbin/sshd"),
             _proc(comm="firefox", exe="/usr/lib/firefox/firefox", cmdline=None, cgroup=None),
             _proc(comm="Xorg", exe="/usr/lib/xorg/Xorg (deleted)", uid=0)]
    for p in procs:
        assert back.policy.evaluate(p) == loaded.policy.evaluate(p)
        assert back.policy.matching(p) == loaded.policy.matching(p)


# -- SIGHUP ----------------------------------------------------------------------------------
def _dry_run(cfg: Path, err: Path) -> subprocess.Popen[bytes]:
    """The real `python -m pyoomd run --dry-run` on the fixture /proc, its log to ``err``."""
    with err.open("w") as f:
        return subprocess.Popen([sys.executable, "-m", "pyoomd", "--procfs", FIXTURE_PROC, "run", "--dry-run",
                                 "--log-format", "json", "--config", str(cfg)], stderr=f, env=ENV, cwd="/")


def _wait_until(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond() and time.monotonic() < deadline:
        time.sleep(0.05)


def test_sighup_recompiles_and_a_bad_config_keeps_the_running_plan(tmp_path: Path) -> None:
    """The real `python -m pyoomd run` (dry run, fixture /proc): a bad config
    on SIGHUP is reload_failed with file:line and the old plan stays; a good
    one is put in force."""
    pol = tmp_path / "policies"
    pol.mkdir()
    pol.chmod(0o755)
    (pol / "a.yaml").write_text('version: 1\nrules:\n  - name: old\n    match: {comm: "^x$"}\n    adjust: 100\n')
    base = BASE_CONFIG % ("null", pol)
    cfg = _config(tmp_path, base + "kill: {grace: 2s}\n")
    err = tmp_path / "stderr"
    proc = _dry_run(cfg, err)
    try:
        (startup,) = wait_for_event(err, "startup")
        assert startup["grace_s"] == 2.0 and startup["policy_rules"] == ["old"]
        cfg.write_text(base + "kill:\n  grace: soon\n")
        proc.send_signal(signal.SIGHUP)
        (failed,) = wait_for_event(err, "reload_failed")
        assert failed["error"].startswith(f"{cfg}:5: kill.grace: not a duration")
        assert failed["policy_rules"] == ["old"]
        cfg.write_text(base + "kill: {grace: 3s}\n")
        (pol / "a.yaml").write_text('version: 1\nrules:\n  - name: new\n    match: {comm: "^x$"}\n    adjust: 7\n')
        proc.send_signal(signal.SIGHUP)
        (reloaded,) = wait_for_event(err, "reloaded")
        assert reloaded["grace_s"] == 3.0 and reloaded["policy_rules"] == ["new"]
        assert [e["event"] for e in json_events(err)].count("reloading") == 2
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    assert json_events(err)[-1]["event"] == "shutdown"


def test_sighup_rebuilds_the_reporters_whose_settings_changed(tmp_path: Path) -> None:
    """systemctl reload turns metrics and the status socket on (and off):
    the real `python -m pyoomd run` (dry run, fixture /proc)."""
    pol = tmp_path / "policies"
    pol.mkdir()
    base = BASE_CONFIG % ("null", pol)
    cfg = _config(tmp_path, base)
    prom, sock = tmp_path / "pyoomd.prom", tmp_path / "status.sock"
    err = tmp_path / "stderr"
    proc = _dry_run(cfg, err)
    try:
        wait_for_event(err, "startup")
        assert not prom.exists() and not sock.exists()
        cfg.write_text(BASE_CONFIG % (sock, pol) + f"metrics: {{textfile: {prom}}}\n")
        proc.send_signal(signal.SIGHUP)
        (rebuilt,) = wait_for_event(err, "reporters_rebuilt")
        assert rebuilt["reporters"] == ["metrics", "status"]
        _wait_until(lambda: prom.exists() and sock.exists())
        assert "pyoomd_level " in prom.read_text() and "pyoomd_kills" in prom.read_text()
        assert sock.exists()
        # a reload that changes nothing of theirs leaves them be
        cfg.write_text(BASE_CONFIG % (sock, pol) + f"metrics: {{textfile: {prom}}}\nkill: {{grace: 4s}}\n")
        proc.send_signal(signal.SIGHUP)
        wait_for_event(err, "reloaded", n=2)
        assert len(wait_for_event(err, "reporters_rebuilt")) == 1
        # and one that turns them off stops them
        cfg.write_text(base)
        proc.send_signal(signal.SIGHUP)
        second = wait_for_event(err, "reporters_rebuilt", n=2)[1]
        assert second["reporters"] == ["metrics", "status"]
        _wait_until(lambda: not sock.exists())
        assert not sock.exists()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    assert not [e for e in json_events(err) if e.get("level") == "error"], json_events(err)


def test_a_status_request_gets_a_fresh_sample_from_the_idle_loop(tmp_path: Path) -> None:
    """At the OK level the loop waits in C for up to a minute; the status
    socket wakes it, so `pyoomd status` shows a sample taken for the request
    (the real `python -m pyoomd run`, dry run, fixture /proc)."""
    from pyoomd.report.control import query

    pol = tmp_path / "policies"
    pol.mkdir()
    sock = tmp_path / "status.sock"
    cfg = _config(tmp_path, BASE_CONFIG % (sock, pol))
    err = tmp_path / "stderr"
    proc = _dry_run(cfg, err)
    try:
        wait_for_event(err, "startup")
        _wait_until(sock.exists)
        times = []
        for _ in range(2):
            time.sleep(1.5)  # older than status.FRESH_S: the request must wake the loop
            asked = time.time()
            doc = query(str(sock))
            assert doc["level"] == "OK"
            times.append(doc["last_sample"]["time"])
            assert asked - 0.05 <= times[-1] <= time.time(), (asked, doc["last_sample"])
        assert times[1] - times[0] >= 1.5
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0


def test_the_loop_keeps_ticking_while_a_slow_reload_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    """A compile child that takes its time (a slow disk) must not stop the
    sampling: the reload runs in a thread, ticks go on, then it lands."""
    from pyoomd.act import selfprotect

    monkeypatch.setattr(selfprotect, "lock_memory", lambda: "skipped in tests")
    monkeypatch.setattr(selfprotect, "set_oom_score_adj", lambda procfs: "skipped in tests")
    ticks = [0]

    def stamp(logger: Any, method: str, event_dict: dict[str, Any]) -> dict[str, Any]:
        return {**event_dict, "tick": ticks[0]}

    log = Log(stamp)

    def tick_of() -> list[tuple[str, int]]:
        return [(ev, kw["tick"]) for ev, kw in log.events]

    old = settings_from_dict({"kill": {"grace": "2s"}, "psi": {"wakeup": {"enabled": False}}})
    new = settings_from_dict({"kill": {"grace": "3s"}, "psi": {"wakeup": {"enabled": False}}})

    def slow_reloader() -> Settings:
        time.sleep(0.6)
        return new

    def sleep(s: float) -> None:
        ticks[0] += 1
        if ticks[0] == 2:
            d.state.reload = True
        if any(e == "reloaded" for e, _ in log.events) or ticks[0] > 500:
            d.state.stop = True
        time.sleep(0.01)

    d = Daemon(old, Procfs(FIXTURE_PROC), Sampler(Procfs(FIXTURE_PROC), "python"), log, sleep=sleep)
    d.reloader = slow_reloader
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    try:
        d.run()
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)
    events = tick_of()
    at = dict(events)
    assert "reloading" in at and "reloaded" in at, events
    assert at["reloaded"] - at["reloading"] >= 20  # ~60 ticks of 10 ms while the reloader slept 0.6 s
    assert d.settings.kill.grace == 3.0


def test_set_ioprio_without_psutil() -> None:
    psutil = pytest.importorskip("psutil")
    code = ("import sys; from pyoomd.act.priority import set_ioprio, IOPRIO_CLASS_BE; "
            "set_ioprio(IOPRIO_CLASS_BE, 7); print('psutil' in sys.modules); sys.stdout.flush(); input()")
    p = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                         env=ENV)
    try:
        assert p.stdout is not None and p.stdout.readline().strip() == "False"
        assert tuple(psutil.Process(p.pid).ionice()) == (psutil.IOPRIO_CLASS_BE, 7)
    finally:
        p.communicate("\n", timeout=10)
