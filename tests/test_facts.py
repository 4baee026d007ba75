"""psutil's facts outside the hot scan (pyoomd/sense/facts.py): user names
and USS/PSS/swap for the rows rank, explain, watch and status show, and the
daemon's frees_kib (USS + swap) of its victim, read during the approach and
waited for after the exit.  Real processes with known memory, no root."""

from __future__ import annotations

import json
import os
import pwd
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from helpers import FakeProc, build, run_main
from logcapture import Log

from pyoomd.cli.watch import watch_fields, watch_line
from pyoomd.daemon import Daemon
from pyoomd.model import Candidate, KillOutcome, Level, MemSample
from pyoomd.report.control import format_status
from pyoomd.sense import snapshot
from pyoomd.sense.facts import DENIED, GONE, Facts, FreesReader, Reading, read_facts, user_name
from pyoomd.sense.procfs import Procfs
from pyoomd.settings.load import load_config
from pyoomd.textsafe import escape_nonprintable

pytestmark = pytest.mark.usefixtures("no_daemon_loop")  # conftest.py: no test reaches the loop

MIB = 1024
HOG_MIB = 64
HOSTILE_COMM = "e\x1b[31mvil\x0b"
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def hog() -> Iterator[subprocess.Popen[bytes]]:
    """A child that touches HOG_MIB MiB of its own (private anonymous) memory,
    with oom_score_adj 1000 (near the top) and a hostile comm."""
    code = ("import ctypes, sys, time; open('/proc/self/oom_score_adj', 'w').write('1000'); "
            "ctypes.CDLL(None).prctl(15, sys.argv[1].encode(), 0, 0, 0); "
            f"b = bytearray({HOG_MIB} << 20)\n"
            "for i in range(0, len(b), 4096): b[i] = 1\n"
            "sys.stdout.write('ready\\n'); sys.stdout.flush(); time.sleep(60)")
    p = subprocess.Popen([sys.executable, "-c", code, HOSTILE_COMM], stdout=subprocess.PIPE)
    assert p.stdout is not None and p.stdout.readline() == b"ready\n"
    yield p
    p.kill()
    p.wait()


def _start(pid: int) -> int:
    info = snapshot.read_proc(Procfs(), pid)
    assert info is not None
    return info.start_time


# -- read_facts ----------------------------------------------------------------------------------
def test_a_process_that_touched_n_mib_frees_at_least_n(hog: subprocess.Popen[bytes]) -> None:
    f = read_facts(Procfs(), hog.pid, _start(hog.pid))
    assert f.why is None and f.user == pwd.getpwuid(os.getuid()).pw_name
    assert f.uss_kib is not None and f.pss_kib is not None and f.rss_kib is not None
    assert f.uss_kib >= HOG_MIB * MIB and f.pss_kib >= f.uss_kib
    assert f.frees_kib == f.uss_kib + (f.swap_kib or 0) >= HOG_MIB * MIB
    assert f.uss_kib <= f.rss_kib  # the interpreter's shared libraries are in RSS, not in USS


def test_a_vanished_or_reused_pid_is_gone_never_an_error(hog: subprocess.Popen[bytes]) -> None:
    start = _start(hog.pid)
    assert read_facts(Procfs(), hog.pid, start + 1) == Facts(why=GONE)  # another process on that pid
    hog.kill()
    hog.wait()
    assert read_facts(Procfs(), hog.pid, start) == Facts(why=GONE)
    assert read_facts(Procfs(), hog.pid).as_dict()["frees_kib"] is None


def test_denied_mid_read_is_shown_as_denied(monkeypatch: pytest.MonkeyPatch, hog: subprocess.Popen[bytes]) -> None:
    def denied(self: psutil.Process) -> Any:
        raise psutil.AccessDenied(self.pid)

    monkeypatch.setattr(psutil.Process, "memory_full_info", denied)
    assert read_facts(Procfs(), hog.pid, _start(hog.pid)) == Facts(why=DENIED)


def test_a_fixture_tree_is_read_as_such_and_psutils_global_is_put_back(tmp_path: Path) -> None:
    procfs = build(tmp_path / "proc", [FakeProc(pid=os.getpid(), oom_score=100)])
    assert read_facts(procfs, os.getpid()).why == GONE  # the fixture has no smaps_rollup: not our real one
    assert psutil.PROCFS_PATH == "/proc"
    assert psutil.Process().memory_full_info().uss > 0


def test_user_name_of_a_uid_as_psutil_gives_it() -> None:
    assert user_name(0) == "root"
    assert user_name(4_000_000_000) == "4000000000"  # no passwd entry: the number
    assert user_name(None) == "-"


def test_importing_the_module_does_not_import_psutil() -> None:
    code = "import sys; import pyoomd.sense.facts, pyoomd.daemon; print('psutil' in sys.modules)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                       env={**os.environ, "PYTHONPATH": str(REPO)})
    assert r.stdout.strip() == "False"


# -- FreesReader and Reading ---------------------------------------------------------------------
def test_frees_now_adds_what_rss_and_swap_grew_by_since_the_read() -> None:
    r = Reading((7, 1), Facts(user="u", uss_kib=900, pss_kib=950, swap_kib=100, rss_kib=1000), at=1.0, ms=2.0)
    assert r.frees_now(1000, 100) == 1000  # unchanged: USS + swap
    assert r.frees_now(1500, 200) == 1600  # grew by 600: all of it its own
    assert r.frees_now(800, 100) == 1000  # shrank: the read stands
    assert Reading((7, 1), Facts(why=GONE), 1.0, 0.0).frees_now(1000, 0) is None


def test_the_reader_thread_reads_the_wanted_process(hog: subprocess.Popen[bytes]) -> None:
    info = snapshot.read_proc(Procfs(), hog.pid)
    assert info is not None
    reader = FreesReader(Procfs(), threaded=True)
    try:
        reader.want(info)
        deadline = time.monotonic() + 10
        while reader.reading(info.identity) is None and time.monotonic() < deadline:
            time.sleep(0.01)
        r = reader.reading(info.identity)
        assert r is not None and r.facts.frees_kib is not None and r.facts.frees_kib >= HOG_MIB * MIB
        assert r.ms > 0
    finally:
        reader.close()
    assert reader._thread is not None and not reader._thread.is_alive()


def test_the_reader_keeps_a_few_readings_and_drops_failed_ones(tmp_path: Path) -> None:
    procs = [FakeProc(pid=100 + i, oom_score=10) for i in range(FreesReader.KEEP + 2)]
    procfs = build(tmp_path / "proc", procs)
    sizes = {p.pid: p.pid * 10 for p in procs}

    def fake(_: Procfs, pid: int, start: int | None) -> Facts:
        return Facts(why=GONE) if pid == 101 else Facts("u", sizes[pid], sizes[pid], 0, sizes[pid])

    reader = FreesReader(procfs, threaded=False, read=fake)
    infos = [snapshot.read_proc(procfs, p.pid) for p in procs]
    for info in infos:
        assert info is not None
        reader.want(info)
    kept = [i for i in infos if i is not None and reader.reading(i.identity) is not None]
    assert [i.pid for i in kept] == [p.pid for p in procs][-FreesReader.KEEP:]
    assert all(i.pid != 101 for i in kept)


# -- the daemon: frees_kib in the kill event, the wait after the exit ---------------------------
class AtTerm:
    """MemAvailable below TERM, swap free as given."""

    backend = "python"

    def __init__(self) -> None:
        self.available, self.swap_free = 1 << 10, 0

    def read(self) -> MemSample:
        return MemSample(mem_total_kib=16 << 20, mem_available_kib=self.available, swap_total_kib=4 << 20,
                         swap_free_kib=self.swap_free)


def _daemon(tmp_path: Path, read: Any) -> tuple[Daemon, Log, list[float], AtTerm]:
    procfs = build(tmp_path / "proc", [FakeProc(pid=4242, oom_score=900, rss_kib=800 * MIB, swap_kib=50 * MIB),
                                        FakeProc(pid=4243, oom_score=100)])
    now = [100.0]
    log = Log()
    sampler: Any = AtTerm()  # a Sampler's read() is all the daemon uses of it here
    d = Daemon(load_config(None, {"dry_run": True, "swap": {"term": "100%", "kill": 0}}), procfs, sampler, log,
               clock=lambda: now[0])
    assert not d.frees.threaded  # an injected clock: the read is done in the caller
    d.frees = FreesReader(procfs, threaded=False, read=read, clock=lambda: now[0])
    return d, log, now, sampler


def _kill(d: Daemon) -> Candidate:
    """The kill event of the daemon's victim now, as the killer's on_first
    logs it just before the signal (pid 4242 is not real: no signal)."""
    cands = d.scan(2)
    assert cands[0].proc.pid == 4242
    d._log_kill(cands[0], "SIGTERM", Level.TERM, cands, "test")
    return cands[0]


def test_the_kill_event_has_frees_kib_from_the_approach_read(tmp_path: Path) -> None:
    def fake(_: Procfs, pid: int, start: int | None) -> Facts:
        return Facts("u", uss_kib=700 * MIB, pss_kib=720 * MIB, swap_kib=50 * MIB, rss_kib=780 * MIB)

    d, log, now, _ = _daemon(tmp_path, fake)
    d._follow_growth(Level.WARN, now[0], d.sampler.read())  # a look between WARN and TERM, then the read
    now[0] += 0.5
    victim = _kill(d)
    (kill,) = log.named("kill")
    assert kill["pid"] == 4242
    # 700 + 50 at the read, plus the 20 MiB its RSS grew by since (780 -> 800, swap 50 both times)
    assert kill["frees_kib"] == 770 * MIB
    assert kill["frees"] == {"uss_kib": 700 * MIB, "pss_kib": 720 * MIB, "swap_kib": 50 * MIB,
                             "rss_kib": 780 * MIB, "read_s_ago": 0.5, "read_ms": kill["frees"]["read_ms"]}
    assert d._expected_back(victim) == 770 * MIB


def test_without_a_read_frees_kib_is_none_and_the_wait_falls_back_to_half(tmp_path: Path) -> None:
    d, log, now, _ = _daemon(tmp_path, lambda *a: Facts(why=GONE))
    d._follow_growth(Level.WARN, now[0], d.sampler.read())
    victim = _kill(d)
    (kill,) = log.named("kill")
    assert kill["frees_kib"] is None and kill["frees"] is None
    assert d._expected_back(victim) == (victim.proc.rss_kib + victim.proc.swap_kib) // 2


def test_the_wait_after_the_exit_is_for_frees_kib_as_memory_plus_swap(tmp_path: Path) -> None:
    def fake(_: Procfs, pid: int, start: int | None) -> Facts:
        return Facts("u", uss_kib=600 * MIB, pss_kib=600 * MIB, swap_kib=200 * MIB, rss_kib=800 * MIB)

    d, log, now, sampler = _daemon(tmp_path, fake)
    d._follow_growth(Level.WARN, now[0], sampler.read())
    victim = _kill(d)
    assert log.named("kill")[0]["frees_kib"] == 800 * MIB
    d._after(victim, KillOutcome(4242, "x", signals=("SIGTERM",), exited=True, ms_to_exit=5.0), d_plan(d))
    assert d.state.release is not None and d.state.release[2] == 800 * MIB
    sampler.available += 590 * MIB
    sampler.swap_free += 200 * MIB
    assert d._releasing(sampler.read(), now[0] + 0.1)  # 790 of 800 MiB back: still waiting
    sampler.available += 10 * MIB
    assert not d._releasing(sampler.read(), now[0] + 0.2)  # all of it back (swap as SwapFree)
    assert d.state.release is None


def d_plan(d: Daemon) -> Any:
    from pyoomd.act.kill import KillPlan

    return KillPlan(d.settings.kill.grace, d.settings.kill.kill_timeout, False)


# -- the views -----------------------------------------------------------------------------------
def test_rank_shows_user_uss_pss_swap_of_the_rows_and_escapes_the_comm(
        hog: subprocess.Popen[bytes], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # --top 50, not 3: the machine may hold larger processes at +1000 too
    # (an integration run's primer or ballast beside this suite)
    assert run_main(["rank", "--top", "50", "--policy", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    header = out.splitlines()[0]
    assert "USS" in header and "PSS" in header and "SWAP" in header and "USER" in header
    (row,) = [line for line in out.splitlines() if f" {hog.pid} " in line]
    assert escape_nonprintable(HOSTILE_COMM, backslash=True) in row
    cols = row.split()
    rss, uss, pss = float(cols[6]), float(cols[7]), float(cols[8])
    assert uss >= HOG_MIB and pss >= uss and rss >= uss
    assert cols[10] == pwd.getpwuid(os.getuid()).pw_name
    assert not [c for c in out if not c.isprintable() and c != "\n"]
    assert run_main(["rank", "--json", "--top", "50", "--policy", str(tmp_path)]) == 0
    (mine,) = [c for c in json.loads(capsys.readouterr().out)["candidates"] if c["pid"] == hog.pid]
    assert mine["facts"]["frees_kib"] >= HOG_MIB * MIB and mine["facts"]["why"] is None


def test_rank_shows_a_dash_for_a_row_gone_or_denied_mid_read(
        hog: subprocess.Popen[bytes], tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    calls = [0]

    def flaky(self: psutil.Process) -> Any:
        calls[0] += 1
        raise (psutil.NoSuchProcess if calls[0] % 2 else psutil.AccessDenied)(self.pid)

    monkeypatch.setattr(psutil.Process, "memory_full_info", flaky)
    assert run_main(["rank", "--top", "50", "--policy", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    (row,) = [line for line in out.splitlines() if f" {hog.pid} " in line]
    assert row.split()[7:10] == ["-", "-", "-"]
    assert calls[0] >= 2


def test_explain_shows_what_killing_it_frees(hog: subprocess.Popen[bytes], tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    assert run_main(["explain", "--json", "--policy", str(tmp_path), str(hog.pid)]) == 0
    (item,) = json.loads(capsys.readouterr().out)
    f = item["facts"]
    assert f["why"] is None and f["frees_kib"] == f["uss_kib"] + f["swap_kib"] >= HOG_MIB * MIB
    assert run_main(["explain", "--policy", str(tmp_path), str(hog.pid)]) == 0
    out = capsys.readouterr().out
    line = next(ln for ln in out.splitlines() if "frees" in ln)
    assert f"user {pwd.getpwuid(os.getuid()).pw_name}  frees " in line and "MiB if killed (USS " in line
    hog.kill()
    hog.wait()
    assert run_main(["explain", "--policy", str(tmp_path), str(hog.pid)]) == 1  # gone: said so, no crash


def test_explain_of_a_process_gone_between_the_scan_and_the_read(capsys: pytest.CaptureFixture[str]) -> None:
    from pyoomd.cli.explain import _print_explained

    item = {"pid": 9, "found": True, "comm": "x", "exe": None, "uid": 0, "cgroup": None, "oom_score": 1,
            "oom_score_adj": 0, "rules": [], "why": "not a candidate: test", "facts": Facts(why=GONE).as_dict()}
    _print_explained(item)
    assert "user, USS/PSS/swap: - (gone mid-read)" in capsys.readouterr().out


def test_watch_line_names_the_victims_user_and_what_it_frees() -> None:
    from pyoomd.model import ProcInfo

    s = MemSample(16 << 20, 1 << 20, 0, 0)
    p = ProcInfo(pid=42, start_time=1, comm="a\x1bb", ppid=1, state="R", uid=1000, rss_kib=1, swap_kib=0,
                 oom_score=900, oom_score_adj=0)
    v = Candidate(p, 900)
    f = watch_fields(s, "TERM", v, Facts("bob\n", 2048, 2100, 1024, 4096))
    assert f["victim"]["facts"]["frees_kib"] == 3072
    line = watch_line(f)
    assert line.endswith("42 a\\x1bb (900+0) bob\\x0a frees 3.0 MiB")
    assert watch_line(watch_fields(s, "TERM", v, Facts(why=GONE))).endswith("(900+0) - -")
    assert "facts" not in watch_fields(s, "TERM", v)["victim"]


def test_status_shows_the_daemons_memory_and_each_kills_user_and_frees() -> None:
    doc = {"pid": 7, "uptime_s": 1.0, "last_kills": [
        {"time": 0, "signal": "SIGTERM", "pid": 4242, "comm": "hog", "uid": 0, "frees_kib": 3 * MIB,
         "reason": "r", "outcome": "victim_exited"},
        {"time": 0, "signal": "SIGTERM", "pid": 4243, "comm": "old", "uid": 4_000_000_000, "reason": "r"}]}
    text = format_status(doc, Facts("root", 10 * MIB, 11 * MIB, 0, 20 * MIB))
    assert "daemon      user root, USS 10.0 MiB, PSS 11.0 MiB, swap 0.0 MiB" in text
    assert "pid 4242 'hog' uid 0 (root), frees 3.0 MiB -> victim_exited" in text
    assert "pid 4243 'old' uid 4000000000 (4000000000) -> ?" in text
    assert "daemon      - (gone)" in format_status(doc, Facts(why=GONE))
    assert "daemon " not in format_status(doc)


def test_the_approach_reads_the_likely_victim_once_not_every_look(tmp_path: Path) -> None:
    from pyoomd.daemon import FREES_REREAD_S

    asked: list[int] = []

    def fake(_: Procfs, pid: int, start: int | None) -> Facts:
        asked.append(pid)
        return Facts("u", uss_kib=MIB, pss_kib=MIB, swap_kib=0, rss_kib=MIB)

    d, _, now, sampler = _daemon(tmp_path, fake)
    for _ in range(5):  # five looks, one a growth interval
        d._follow_growth(Level.WARN, now[0], sampler.read())
        now[0] += d.settings.growth.interval
    assert asked == [4242]  # the top of the look, read once: frees_now follows its growth since
    now[0] += FREES_REREAD_S
    d._follow_growth(Level.WARN, now[0], sampler.read())
    assert asked == [4242, 4242]


def test_the_approach_reads_the_one_the_rules_rank_first(tmp_path: Path) -> None:
    from pyoomd.judge.rank import Verdict

    class Protect4242:
        max_bonus = 0

        def evaluate(self, p: Any) -> Verdict:
            return Verdict(protect=p.pid == 4242, protect_rule="keep" if p.pid == 4242 else None)

    asked: list[int] = []

    def fake(_: Procfs, pid: int, start: int | None) -> Facts:
        asked.append(pid)
        return Facts(why=GONE)

    d, _, now, sampler = _daemon(tmp_path, fake)
    d.policy = Protect4242()
    d._follow_growth(Level.WARN, now[0], sampler.read())
    assert asked == [4243]
