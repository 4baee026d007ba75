"""Per-user fair share: the pure choice (judge/fairshare.py) on hand-built
candidates, and the daemon's by_user scan over a fake /proc, in dry-run."""

from __future__ import annotations

from pathlib import Path

from helpers import FakeProc, FakeSampler, build
from logcapture import Log

from pyoomd.daemon import Daemon
from pyoomd.judge.fairshare import fair_order, user_shares
from pyoomd.judge.rank import order, score
from pyoomd.model import Candidate, ProcInfo
from pyoomd.settings.load import load_config

A, B, ROOT = 1001, 1002, 0


def _cand(pid: int, uid: int, score_: int, rss_mib: int) -> Candidate:
    p = ProcInfo(pid=pid, start_time=pid, comm=f"p{pid}", ppid=1, state="S", uid=uid, rss_kib=rss_mib << 10,
                 swap_kib=0, oom_score=score_, oom_score_adj=0)
    c = score(p)
    assert isinstance(c, Candidate)
    return c


def test_the_user_furthest_above_an_equal_share_comes_first() -> None:
    # thirty 100 MiB processes of A against one 1 GiB process of B (and a little of root)
    rows = [(A, 100 << 10)] * 30 + [(B, 1 << 20), (ROOT, 40 << 10)]
    shares = user_shares(rows)
    assert [u.uid for u in shares] == [A, B, ROOT]
    total = 3000 + 1024 + 40
    assert shares[0].share_kib == (total << 10) // 3 and shares[0].processes == 30
    assert shares[0].excess_kib > 0 > shares[1].excess_kib


def test_users_holding_no_memory_do_not_dilute_the_share() -> None:
    shares = user_shares([(A, 300), (B, 100), (7, 0), (8, 0)])
    assert [(u.uid, u.share_kib) for u in shares] == [(A, 200), (B, 200)]
    assert user_shares([]) == [] and user_shares([(A, 0)]) == []


def test_ties_go_to_more_memory_then_the_lower_uid() -> None:
    assert [u.uid for u in user_shares([(B, 500), (A, 500)])] == [A, B]


def test_fair_order_puts_the_chosen_users_worst_process_first() -> None:
    big_b = _cand(1, B, 600, 1024)
    a_procs = [_cand(10 + i, A, 60 + i, 100) for i in range(30)]
    cands = order([big_b, *a_procs])
    assert cands[0] is big_b  # today's order: the biggest process
    shares = user_shares((c.proc.uid, c.proc.rss_kib) for c in cands)
    fair = fair_order(cands, shares)
    assert fair[0].proc.uid == A and fair[0].proc.pid == 39  # A's worst (highest badness)
    assert fair[:30] == [c for c in cands if c.proc.uid == A]  # A's in today's order, then B
    assert fair[30] is big_b


def test_one_user_keeps_todays_order_exactly() -> None:
    cands = order([_cand(i, A, (i * 37) % 500, 10 + i) for i in range(1, 40)])
    shares = user_shares((c.proc.uid, c.proc.rss_kib) for c in cands)
    assert fair_order(cands, shares) == cands
    assert fair_order(cands, []) == cands


def test_users_without_a_share_come_last_in_their_order() -> None:
    c1, c2, c3 = _cand(1, 5, 900, 1), _cand(2, A, 100, 1), _cand(3, 6, 800, 1)
    assert fair_order([c1, c2, c3], user_shares([(A, 100)])) == [c2, c1, c3]


def _daemon(tmp_path: Path, by_user: bool, procs: list[FakeProc]) -> tuple[Daemon, Log]:
    procfs = build(tmp_path / "proc", procs)
    settings = load_config(None, {"dry_run": True, "choice": {"by_user": by_user}})
    log = Log()
    return Daemon(settings, procfs, FakeSampler(), log), log


def _many_vs_one() -> list[FakeProc]:
    procs = [FakeProc(pid=100 + i, oom_score=6, uid=A, rss_kib=100 << 10) for i in range(30)]
    procs[7] = FakeProc(pid=107, oom_score=7, uid=A, rss_kib=110 << 10)  # A's worst
    return [*procs, FakeProc(pid=200, oom_score=64, uid=B, rss_kib=1 << 20)]


def test_daemon_by_user_kills_the_many_not_the_one(tmp_path: Path) -> None:
    d, log = _daemon(tmp_path, True, _many_vs_one())
    cands = d._scan_choice(1, None)
    assert cands[0].proc.pid == 107
    (chosen,) = log.named("user_chosen")
    assert chosen["uid"] == A and chosen["processes"] == 30 and chosen["kib"] == (29 * 100 + 110) << 10
    assert chosen["users"][0][0] == A and chosen["users"][1] == [B, 1 << 20]


def test_daemon_without_by_user_keeps_the_kernels_choice(tmp_path: Path) -> None:
    d, log = _daemon(tmp_path, False, _many_vs_one())
    assert d._scan_choice(1, None)[0].proc.pid == 200 and not log.named("user_chosen")


def test_daemon_by_user_moves_on_when_the_user_has_no_candidate(tmp_path: Path) -> None:
    procs = _many_vs_one()
    procs = [FakeProc(pid=p.pid, oom_score=p.oom_score, uid=p.uid, rss_kib=p.rss_kib,
                      adj=-1000 if p.uid == A else 0) for p in procs]  # A's processes are untouchable
    d, log = _daemon(tmp_path, True, procs)
    assert d._scan_choice(1, None)[0].proc.pid == 200
    assert log.named("user_chosen")[0]["uid"] == B


def test_daemon_by_user_with_one_user_is_todays_choice(tmp_path: Path) -> None:
    procs = [FakeProc(pid=100 + i, oom_score=(i * 53) % 300, uid=A, rss_kib=(i + 1) << 10) for i in range(20)]
    d, _ = _daemon(tmp_path, True, procs)
    d2, _ = _daemon(tmp_path / "again", False, procs)
    assert [c.proc.pid for c in d._scan_choice(3, None)] == [c.proc.pid for c in d2._scan_choice(3, None)]
