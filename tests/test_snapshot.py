"""The lazy process scan, over fake /proc trees built in tmp_path."""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import pytest
from helpers import BASE, CountingProcfs, FakeProc, build

from pyoomd.judge.rank import NoPolicy, Verdict, order, score
from pyoomd.model import Candidate, Excluded, ProcInfo
from pyoomd.sense.procfs import Procfs
from pyoomd.sense.snapshot import PF_KTHREAD, Warm, read_proc, read_scores, scan


def plain(p: ProcInfo) -> Candidate | Excluded:
    return score(p, NoPolicy())


def pids_of(cands: list[Candidate]) -> list[int]:
    return [c.proc.pid for c in order(cands)]


# -- what is skipped --------------------------------------------------------------
@pytest.fixture
def mixed(tmp_path: Path) -> Procfs:
    return build(tmp_path / "proc", [
        FakeProc(1, 900, comm=b"systemd"),
        FakeProc(BASE + 2, 800, comm=b"kthreadd", flags=PF_KTHREAD | 0x40),
        FakeProc(BASE + 3, 700, comm=b"defunct", state="Z"),
        FakeProc(BASE + 4, 600, comm=b"dead", state="X"),
        FakeProc(BASE + 5, 500, comm=b"skipme"),
        FakeProc(BASE + 6, 400, comm=b"never", adj=-1000),
        FakeProc(BASE + 7, 300, comm=b"firefox", rss_kib=900000, swap_kib=1000, uid=1001),
        FakeProc(BASE + 8, 200, comm=b"bash"),
    ])


def test_scan_skips_pid1_kthreads_zombies(mixed: Procfs) -> None:
    table = scan(mixed, plain, max_bonus=0, top_n=100, exhaustive=True)
    got = set(pids_of(table.candidates))
    assert 1 not in got
    assert BASE + 2 not in got  # PF_KTHREAD
    assert BASE + 3 not in got  # zombie
    assert BASE + 4 not in got  # dead
    assert got == {BASE + 5, BASE + 7, BASE + 8}
    assert [e.proc.pid for e in table.excluded] == [BASE + 6]
    assert table.scanned == 7  # all but pid 1 had oom_score read


def test_scan_skip_set(mixed: Procfs) -> None:
    table = scan(mixed, plain, max_bonus=0, top_n=100, skip={1, BASE + 5}, exhaustive=True)
    got = set(pids_of(table.candidates))
    assert BASE + 5 not in got
    assert got == {BASE + 7, BASE + 8}


def test_scan_lazy_top1_skips_the_unreachable(mixed: Procfs) -> None:
    table = scan(mixed, plain, max_bonus=0, top_n=1)
    assert pids_of(table.candidates)[0] == BASE + 5


def test_read_proc_fields(mixed: Procfs) -> None:
    info = read_proc(mixed, BASE + 7)
    assert info is not None
    assert (info.pid, info.comm, info.state, info.uid) == (BASE + 7, "firefox", "S", 1001)
    assert (info.rss_kib, info.swap_kib, info.oom_score, info.oom_score_adj) == (900000, 1000, 300, 0)
    assert info.start_time == 1000 + (BASE + 7) % 100000
    assert info.pgid == BASE + 7
    assert info.cmdline == "/usr/bin/proc --flag"
    assert info.exe == "/usr/bin/proc"
    assert info.cgroup == "/user.slice/user-1000.slice/app.scope"
    cheap = read_proc(mixed, BASE + 7, full=False)
    assert cheap is not None and (cheap.cmdline, cheap.exe, cheap.cgroup) == (None, None, None)


def test_read_proc_none_for_kthread_and_zombie(mixed: Procfs) -> None:
    assert read_proc(mixed, BASE + 2) is None
    assert read_proc(mixed, BASE + 3) is None
    assert read_proc(mixed, 999_999_999) is None  # no such pid


def test_read_scores_best_first(mixed: Procfs) -> None:
    scores = read_scores(mixed, skip={1})
    assert scores == sorted(scores, reverse=True)
    assert scores[0] == (800, BASE + 2)
    assert (900, 1) not in scores


# -- vanished processes -----------------------------------------------------------
@pytest.mark.parametrize("missing", ["stat", "status", "oom_score_adj"])
def test_vanished_mid_way_is_skipped(tmp_path: Path, missing: str) -> None:
    procfs = build(tmp_path / "proc", [
        FakeProc(BASE + 1, 900, omit=(missing,)),
        FakeProc(BASE + 2, 100),
    ])
    table = scan(procfs, plain, max_bonus=0, top_n=1)
    assert pids_of(table.candidates) == [BASE + 2]
    assert table.excluded == []


def test_vanished_before_oom_score_is_skipped(tmp_path: Path) -> None:
    procfs = build(tmp_path / "proc", [FakeProc(BASE + 1, 900, omit=("oom_score",)), FakeProc(BASE + 2, 1)])
    (tmp_path / "proc" / str(BASE + 9)).mkdir()  # an empty pid dir
    table = scan(procfs, plain, max_bonus=0, top_n=1)
    assert table.scanned == 1
    assert pids_of(table.candidates) == [BASE + 2]


def test_optional_files_missing_still_a_candidate(tmp_path: Path) -> None:
    procfs = build(tmp_path / "proc", [FakeProc(BASE + 1, 900, omit=("cmdline", "exe", "cgroup"))])
    table = scan(procfs, plain, max_bonus=0, top_n=1)
    (c,) = table.candidates
    assert (c.proc.cmdline, c.proc.exe, c.proc.cgroup) == (None, None, None)


class VanishingProcfs(Procfs):
    """ESRCH on any read of ``gone`` after its oom_score: it exited between the passes."""

    def __init__(self, root: str, gone: int) -> None:
        super().__init__(root)
        self.gone = gone

    def read_pid(self, pid: int, name: str, limit: int = 1 << 20) -> bytes:
        if pid == self.gone and name != "oom_score":
            raise ProcessLookupError(3, "No such process", self.pid_file(pid, name))
        return super().read_pid(pid, name, limit)


def test_vanished_between_passes_esrch(tmp_path: Path) -> None:
    build(tmp_path / "proc", [FakeProc(BASE + 1, 900), FakeProc(BASE + 2, 100)])
    procfs = VanishingProcfs(str(tmp_path / "proc"), gone=BASE + 1)
    table = scan(procfs, plain, max_bonus=0, top_n=1)
    assert pids_of(table.candidates) == [BASE + 2]


def test_garbage_files_are_skipped_not_raised(tmp_path: Path) -> None:
    procfs = build(tmp_path / "proc", [FakeProc(BASE + 1, 900), FakeProc(BASE + 2, 100)])
    (tmp_path / "proc" / str(BASE + 1) / "stat").write_bytes(b"garbage")
    (tmp_path / "proc" / str(BASE + 2) / "cgroup").write_bytes(b"not a cgroup line\n")
    table = scan(procfs, plain, max_bonus=0, top_n=1)
    (c,) = table.candidates
    assert c.proc.pid == BASE + 2
    assert c.proc.cgroup is None


# -- the lazy bound -----------------------------------------------------------------
N_PROCS = 60


@pytest.fixture
def many(tmp_path: Path) -> str:
    root = tmp_path / "proc"
    build(root, [FakeProc(BASE + i, 10 * i, comm=f"p{i}".encode()) for i in range(1, N_PROCS + 1)])
    return str(root)


def test_lazy_bound_reads_few(many: str) -> None:
    procfs = CountingProcfs(many)
    table = scan(procfs, plain, max_bonus=0, top_n=1)
    assert table.scanned == N_PROCS
    assert table.detailed == 1
    assert pids_of(table.candidates)[0] == BASE + N_PROCS
    assert len(procfs.reads["oom_score"]) == N_PROCS  # pass 1 reads every score
    assert procfs.reads["status"] == {BASE + N_PROCS}
    assert procfs.reads["cmdline"] == {BASE + N_PROCS}


def test_lazy_bound_top_n(many: str) -> None:
    table = scan(Procfs(many), plain, max_bonus=0, top_n=3)
    assert table.detailed == 3
    assert pids_of(table.candidates) == [BASE + N_PROCS, BASE + N_PROCS - 1, BASE + N_PROCS - 2]


def test_large_bonus_reads_all(many: str) -> None:
    procfs = CountingProcfs(many)
    table = scan(procfs, plain, max_bonus=2000, top_n=1)
    assert table.detailed == N_PROCS
    assert len(procfs.reads["status"]) == N_PROCS


def test_exhaustive_reads_all(many: str) -> None:
    assert scan(Procfs(many), plain, max_bonus=0, top_n=1, exhaustive=True).detailed == N_PROCS


def test_bonus_bound_is_exact(many: str) -> None:
    # top raw score is 600; p1 (raw 10) gets +595 -> 605 and must still be found
    @dataclass
    class Boost:
        max_bonus: int = 595

        def evaluate(self, p: ProcInfo) -> Verdict:
            return Verdict(adjust=595, rules=("boost",)) if p.pid == BASE + 1 else Verdict()

    pol = Boost()
    table = scan(Procfs(many), lambda p: score(p, pol), pol.max_bonus, top_n=1)
    best = order(table.candidates)[0]
    assert (best.proc.pid, best.badness) == (BASE + 1, 605)
    # the lowest raw score is 10, and 10 + 595 is not below 605: every process could still win
    assert table.detailed == N_PROCS


@dataclass
class TablePolicy:
    """A fixed adjust per pid; ``max_bonus`` is the largest of them."""

    adjust: dict[int, int]
    max_bonus: int

    def evaluate(self, p: ProcInfo) -> Verdict:
        return Verdict(adjust=self.adjust[p.pid])


def test_lazy_matches_exhaustive_random(tmp_path: Path) -> None:
    rnd = random.Random(7)
    for round_ in range(5):
        procs = [FakeProc(BASE + i, rnd.randrange(0, 1000), rss_kib=rnd.randrange(1, 50) * 1000,
                          adj=rnd.choice([0, 0, 0, -1000])) for i in range(1, 80)]
        root = tmp_path / f"proc{round_}"
        build(root, procs)
        pol = TablePolicy({p.pid: rnd.randrange(-200, 301) for p in procs}, max_bonus=300)
        scorer = partial(score, policy=pol)
        for top_n in (1, 3, 10):
            lazy = scan(Procfs(str(root)), scorer, pol.max_bonus, top_n)
            full = scan(Procfs(str(root)), scorer, pol.max_bonus, top_n, exhaustive=True)
            assert pids_of(lazy.candidates)[:top_n] == pids_of(full.candidates)[:top_n]
            assert lazy.detailed <= full.detailed


# -- warm ranking (issue 11: the victim ready at the crossing) -------------------
def test_warm_scan_reads_only_new_scores_and_the_detailed(many: str) -> None:
    procfs = CountingProcfs(many)
    last = {BASE + i: 10 * i for i in range(1, N_PROCS)}  # the top process is new since the look
    table = scan(procfs, plain, max_bonus=0, top_n=1, warm=Warm(last, slack=5))
    assert pids_of(table.candidates)[0] == BASE + N_PROCS
    assert table.scanned == 1  # only the new pid's oom_score was read in pass 1
    # pass 2 re-reads the real score of each one it details, here the new one
    # (600) and those whose estimate + slack could still reach it (590 + 5)
    assert procfs.reads["oom_score"] == {BASE + N_PROCS}
    assert procfs.reads["oom_score_adj"] == {BASE + N_PROCS}


def test_warm_scan_judges_by_the_real_score(tmp_path: Path) -> None:
    # b rose from 100 to 700 since the look, far beyond the slack: its bound
    # (110) is below a's real score (400), so b is not read and a wins, by
    # its real score, not its estimate: the documented limit of warm
    # ranking.  When b's rise is within the slack, b is read and wins.
    procfs = build(tmp_path / "proc", [FakeProc(BASE + 1, 400, comm=b"a"), FakeProc(BASE + 2, 700, comm=b"b")])
    far = scan(procfs, plain, max_bonus=0, top_n=1, warm=Warm({BASE + 1: 500, BASE + 2: 100}, slack=10))
    assert pids_of(far.candidates) == [BASE + 1]
    assert order(far.candidates)[0].badness == 400  # the real score, not the estimate
    near = scan(procfs, plain, max_bonus=0, top_n=1, warm=Warm({BASE + 1: 500, BASE + 2: 450}, slack=60))
    assert pids_of(near.candidates)[0] == BASE + 2
    # a process seen rising between the last two looks carries its own slack
    rising = scan(procfs, plain, max_bonus=0, top_n=1,
                  warm=Warm({BASE + 1: 500, BASE + 2: 100}, slack=10, rising={BASE + 2: 700}))
    assert pids_of(rising.candidates)[0] == BASE + 2


def test_warm_scan_matches_the_cold_one_when_scores_are_unchanged(tmp_path: Path) -> None:
    rnd = random.Random(11)
    for round_ in range(4):
        procs = [FakeProc(BASE + i, rnd.randrange(0, 1000), rss_kib=rnd.randrange(1, 50) * 1000)
                 for i in range(1, 120)]
        root = tmp_path / f"proc{round_}"
        build(root, procs)
        # the look saw all but a few (new since), each within the slack of now
        last = {p.pid: p.oom_score - rnd.randrange(0, 8) for p in procs if rnd.random() > 0.05}
        for top_n in (1, 5):
            cold = scan(Procfs(str(root)), plain, 0, top_n)
            warm = scan(Procfs(str(root)), plain, 0, top_n, warm=Warm(last, slack=8))
            assert pids_of(warm.candidates)[:top_n] == pids_of(cold.candidates)[:top_n]
            assert warm.scanned == len(procs) - len(last)


def test_exhaustive_ignores_warm(many: str) -> None:
    table = scan(Procfs(many), plain, 0, 1, exhaustive=True, warm=Warm({}, slack=0))
    assert table.scanned == N_PROCS and table.detailed == N_PROCS


def test_excluded_top_does_not_stop_the_scan(tmp_path: Path) -> None:
    procfs = build(tmp_path / "proc", [FakeProc(BASE + 1, 999, adj=-1000), FakeProc(BASE + 2, 5)])
    table = scan(procfs, plain, max_bonus=0, top_n=1)
    assert pids_of(table.candidates) == [BASE + 2]
    assert table.detailed == 2


def test_equal_scores_larger_rss_found(tmp_path: Path) -> None:
    # pass 2 reads the higher pid first; the equal raw score of the lower pid must still be read
    procfs = build(tmp_path / "proc", [FakeProc(BASE + 1, 500, rss_kib=900000), FakeProc(BASE + 2, 500, rss_kib=10)])
    table = scan(procfs, plain, max_bonus=0, top_n=1)
    assert pids_of(table.candidates)[0] == BASE + 1


# -- hostile names ------------------------------------------------------------------
@pytest.mark.parametrize(
    ("comm", "expected"),
    [
        (b"foo) Z 1 2", "foo) Z 1 2"),
        (b"x) Z", "x) Z"),
        (b"a\nb", "a\nb"),
        (b"((x)) (y", "((x)) (y"),
        (b"  ", "  "),
        (b"bad\xffutf8", "bad\ufffdutf8"),
    ],
)
def test_hostile_comm(tmp_path: Path, comm: bytes, expected: str) -> None:
    procfs = build(tmp_path / "proc", [FakeProc(BASE + 1, 500, comm=comm, rss_kib=1234)])
    table = scan(procfs, plain, max_bonus=0, top_n=1)
    (c,) = table.candidates  # not mistaken for a zombie by the "Z" in its name
    assert c.proc.comm == expected
    assert c.proc.state == "S"
    assert c.proc.ppid == 1
    assert c.proc.rss_kib == 1234


def test_real_zombie_with_hostile_name(tmp_path: Path) -> None:
    procfs = build(tmp_path / "proc", [FakeProc(BASE + 1, 500, comm=b"foo) S 1", state="Z")])
    assert scan(procfs, plain, max_bonus=0, top_n=1).candidates == []


def test_fixture_tree_scan() -> None:
    # the shared fixture: 1 systemd, 2 kthreadd, 205 zombie, 206 sshd at -1000
    root = Path(__file__).parent / "fixtures" / "proc"
    table = scan(Procfs(str(root)), plain, max_bonus=0, top_n=100, exhaustive=True)
    got = {c.proc.pid for c in table.candidates}
    assert not got & {1, 2, 205, 206}
    assert 201 in got
    assert {e.proc.pid for e in table.excluded} == {206}
    top = order(table.candidates)[0]
    assert (top.proc.pid, top.proc.comm, top.proc.state) == (201, "foo) Z ", "S")


def test_warm_scan_finds_the_pids_born_since_the_look_without_listing(tmp_path: Path) -> None:
    # /proc/loadavg's last pid before the look and now: the pids between are
    # the new ones; /proc is not listed.  A /proc of another PID namespace
    # (its self link is not our pid) or a counter that went back: listed.
    root = tmp_path / "proc"
    build(root, [FakeProc(BASE + 1, 300), FakeProc(BASE + 2, 200), FakeProc(BASE + 5, 900, comm=b"young")])
    os.symlink(str(os.getpid()), root / "self")
    (root / "loadavg").write_text(f"0.10 0.20 0.30 1/99 {BASE + 5}\n")

    class NoListing(Procfs):
        def pids(self) -> list[int]:
            raise AssertionError("listed /proc")

    warm = Warm({BASE + 1: 300, BASE + 2: 200}, slack=5, last_pid=BASE + 2)
    table = scan(NoListing(str(root)), plain, 0, 1, warm=warm)
    assert pids_of(table.candidates)[0] == BASE + 5
    assert table.scanned == 3  # BASE+3 and +4 were handed out and are gone: tried, skipped

    wrapped = Warm({BASE + 1: 300, BASE + 2: 200}, slack=5, last_pid=BASE + 9)
    listed = CountingProcfs(str(root))
    assert pids_of(scan(listed, plain, 0, 1, warm=wrapped).candidates)[0] == BASE + 5
    os.unlink(root / "self")
    os.symlink("1", root / "self")  # not ours: loadavg counts another namespace
    assert pids_of(scan(Procfs(str(root)), plain, 0, 1, warm=warm).candidates)[0] == BASE + 5
    with pytest.raises(AssertionError, match="listed /proc"):
        scan(NoListing(str(root)), plain, 0, 1, warm=warm)
