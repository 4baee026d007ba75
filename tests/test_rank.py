"""Ranking: hand-built ProcInfo lists, no files."""

from __future__ import annotations

from dataclasses import dataclass, field

from pyoomd.judge.rank import BADNESS_MAX, NoPolicy, Verdict, order, rank_key, score
from pyoomd.model import Candidate, Excluded, ProcInfo


def proc(pid: int, oom_score: int = 100, adj: int = 0, rss: int = 1000, swap: int = 0,
         comm: str = "p") -> ProcInfo:
    return ProcInfo(pid=pid, start_time=1000 + pid, comm=comm, ppid=1, state="S", uid=1000,
                    rss_kib=rss, swap_kib=swap, oom_score=oom_score, oom_score_adj=adj)


@dataclass
class FakePolicy:
    """Gives each pid a fixed Verdict; records what it was asked about."""

    verdicts: dict[int, Verdict] = field(default_factory=dict)
    seen: list[int] = field(default_factory=list)
    max_bonus: int = 1000

    def evaluate(self, p: ProcInfo) -> Verdict:
        self.seen.append(p.pid)
        return self.verdicts.get(p.pid, Verdict())


def cand(c: Candidate | Excluded) -> Candidate:
    assert isinstance(c, Candidate), c
    return c


# -- score -------------------------------------------------------------------------
def test_plain_score_is_oom_score() -> None:
    c = cand(score(proc(10, oom_score=345)))
    assert c.badness == 345
    assert c.rules == ()
    assert any("345" in r for r in c.reasons)
    assert cand(score(proc(10, oom_score=345), NoPolicy())).badness == 345


def test_adj_minus_1000_excluded() -> None:
    e = score(proc(10, oom_score=0, adj=-1000))
    assert isinstance(e, Excluded)
    assert "-1000" in e.why


def test_adj_minus_1000_excluded_whatever_the_policy_says() -> None:
    pol = FakePolicy({10: Verdict(adjust=1500, rules=("hog",))})
    e = score(proc(10, oom_score=0, adj=-1000), pol)
    assert isinstance(e, Excluded)


def test_adj_minus_999_is_a_candidate() -> None:
    c = cand(score(proc(10, oom_score=0, adj=-999)))
    assert c.badness == 0
    assert any("-999" in r for r in c.reasons)


def test_protect_excludes() -> None:
    pol = FakePolicy({10: Verdict(protect=True, protect_rule="keep-sshd")})
    e = score(proc(10, oom_score=1999), pol)
    assert isinstance(e, Excluded)
    assert "keep-sshd" in e.why
    # others are untouched
    assert cand(score(proc(11, oom_score=5), pol)).badness == 5


def test_protect_wins_over_adjust() -> None:
    pol = FakePolicy({10: Verdict(adjust=500, protect=True, protect_rule="r")})
    assert isinstance(score(proc(10), pol), Excluded)


def test_adjust_adds_and_carries_overrides() -> None:
    pol = FakePolicy({10: Verdict(adjust=250, rules=("browsers", "tabs"), signal="SIGKILL", grace_s=1.0,
                                  kill_group=True)})
    c = cand(score(proc(10, oom_score=100), pol))
    assert c.badness == 350
    assert c.rules == ("browsers", "tabs")
    assert (c.signal, c.grace_s, c.kill_group) == ("SIGKILL", 1.0, True)
    assert any("+250" in r and "browsers" in r for r in c.reasons)


def test_adjust_clamps_high_and_low() -> None:
    pol = FakePolicy({1: Verdict(adjust=500), 2: Verdict(adjust=-500), 3: Verdict(adjust=-2000)})
    assert cand(score(proc(1, oom_score=1900), pol)).badness == BADNESS_MAX == 2000
    assert cand(score(proc(2, oom_score=100), pol)).badness == 0
    assert cand(score(proc(3, oom_score=2000), pol)).badness == 0


def test_negative_adjust_still_a_candidate() -> None:
    pol = FakePolicy({1: Verdict(adjust=-50)})
    c = cand(score(proc(1, oom_score=80), pol))
    assert c.badness == 30
    assert any("-50" in r for r in c.reasons)


# -- order -------------------------------------------------------------------------
def scored(procs: list[ProcInfo], pol: FakePolicy | None = None) -> list[Candidate]:
    return [c for c in (score(p, pol) for p in procs) if isinstance(c, Candidate)]


def pids(cands: list[Candidate]) -> list[int]:
    return [c.proc.pid for c in cands]


def test_order_highest_badness_first() -> None:
    procs = [proc(1, 10), proc(2, 900), proc(3, 450), proc(4, 0), proc(5, 1999)]
    assert pids(order(scored(procs))) == [5, 2, 3, 1, 4]


def test_order_size_breaks_ties() -> None:
    procs = [proc(1, 500, rss=100), proc(2, 500, rss=300), proc(3, 500, rss=200)]
    assert pids(order(scored(procs))) == [2, 3, 1]


def test_order_counts_swap_in_size() -> None:
    procs = [proc(1, 500, rss=300, swap=0), proc(2, 500, rss=100, swap=250)]  # 300 vs 350
    assert pids(order(scored(procs))) == [2, 1]


def test_order_pid_breaks_full_ties() -> None:
    procs = [proc(30, 500, rss=100), proc(10, 500, rss=100), proc(20, 500, rss=100)]
    assert pids(order(scored(procs))) == [10, 20, 30]


def test_order_uses_policy_badness_not_raw_score() -> None:
    pol = FakePolicy({1: Verdict(adjust=600), 3: Verdict(protect=True)})
    procs = [proc(1, 100), proc(2, 500), proc(3, 1900), proc(4, 0, adj=-1000)]
    ranked = order(scored(procs, pol))
    assert pids(ranked) == [1, 2]
    assert [c.badness for c in ranked] == [700, 500]


def test_order_does_not_mutate_input_and_is_stable_under_shuffle() -> None:
    procs = [proc(i, (i * 37) % 11 * 100, rss=(i * 13) % 5) for i in range(2, 40)]
    cands = scored(procs)
    before = list(cands)
    a = order(cands)
    b = order(list(reversed(cands)))
    assert cands == before
    assert pids(a) == pids(b)
    assert [rank_key(c) for c in a] == sorted(rank_key(c) for c in a)


def test_order_empty() -> None:
    assert order([]) == []
