"""The swap-relief and thrash rules on recorded counter sequences (fake clock).

Each sequence is a list of readings every 0.1 s: MemAvailable, SwapFree,
the PSI full/some ``total`` stall counters (us) and /proc/vmstat's pswpin,
pswpout and workingset_refault_file, as the daemon's tick passes them in.
"""

from __future__ import annotations

from pyoomd.judge.decide import Judge, memory_level
from pyoomd.judge.relief import ReliefRule
from pyoomd.judge.thrash import ThrashRule
from pyoomd.model import Level, MemSample, Pressure, PsiLine
from pyoomd.sense.vmstat import VmCounters, parse_vmstat
from pyoomd.settings.amounts import Thresholds
from pyoomd.settings.schema import SamplingConfig

MIB = 1024
GIB = 1024 * MIB
TH = Thresholds(mem_warn_kib=800 * MIB, mem_term_kib=400 * MIB, mem_kill_kib=200 * MIB,
                swap_term_kib=205 * MIB, swap_kill_kib=102 * MIB)
STEP = 0.1


def judge(relief: bool = True, thrash: bool = True) -> Judge:
    return Judge(TH, SamplingConfig(), None, ReliefRule() if relief else None,
                 ThrashRule(gate_kib=TH.mem_warn_kib) if thrash else None)


class Recording:
    """Builds readings step by step; ``stall`` is the full stall share of each step."""

    def __init__(self, avail_kib: int, swap_free_kib: int = GIB) -> None:
        self.t = 100.0
        self.avail, self.swap_free = avail_kib, swap_free_kib
        self.full_us = self.some_us = 0
        self.vm = VmCounters(0, 0, 0, 0)

    def step(self, d_avail_kib: float = 0, stall: float = 0.0, swapin_mib_s: float = 0.0,
             swapout_mib_s: float = 0.0, refault_mib_s: float = 0.0) -> tuple[MemSample, float, VmCounters]:
        self.t += STEP
        self.avail = max(0, int(self.avail + d_avail_kib))
        self.full_us += int(stall * STEP * 1e6)
        self.some_us += int(min(1.0, stall * 1.5) * STEP * 1e6)
        pages = lambda mib_s: int(mib_s * 256 * STEP)  # MiB/s -> 4 KiB pages per step
        self.vm = VmCounters(self.vm.pswpin + pages(swapin_mib_s), self.vm.pswpout + pages(swapout_mib_s),
                             self.vm.refault_file + pages(refault_mib_s), self.vm.refault_anon)
        psi = Pressure(PsiLine(0, 0, 0, self.some_us), PsiLine(0, 0, 0, self.full_us))
        return MemSample(4 * GIB, self.avail, 2 * GIB, self.swap_free, psi), self.t, self.vm


def levels(j: Judge, rec: Recording, n: int, **kw: float) -> list[Level]:
    out = []
    for _ in range(n):
        s, t, vm = rec.step(**kw)
        out.append(j.judge(s, t, vm).level)
    return out


# -- swap relief --------------------------------------------------------------

def test_leak_faster_than_swap_acts_at_term_with_swap_free() -> None:
    """150 MiB/s leak, swap-out 40 MiB/s: MemAvailable falls ~110 MiB/s net
    through the TERM level with 1 of 2 GiB swap free: act (earlyoom waits)."""
    j, rec = judge(), Recording(700 * MIB)
    seen = levels(j, rec, 40, d_avail_kib=-11 * MIB, swapout_mib_s=40)
    first_term = seen.index(Level.TERM)
    assert rec.swap_free > TH.swap_term_kib  # the old rule would say OK
    # the first sample at or below 400 MiB (700 - 11k <= 400 at k=28)
    assert first_term == 27
    s, t, vm = rec.step(d_avail_kib=-11 * MIB, swapout_mib_s=40)
    assert "swap not keeping up" in j.judge(s, t, vm).reason


def test_swap_absorbing_the_growth_keeps_waiting() -> None:
    """Below TERM, MemAvailable steady: swap-out matches the growth, no stall."""
    j, rec = judge(), Recording(350 * MIB)
    assert memory_level(rec.step()[0], TH) == Level.TERM
    seen = levels(j, rec, 50, d_avail_kib=0, swapout_mib_s=150)
    assert set(seen) == {Level.WARN}
    assert j.judge(*rec.step(swapout_mib_s=150)).sleep_s <= 0.05  # watching it closely


def test_slow_decline_far_from_the_floor_keeps_waiting() -> None:
    """At 390 MiB (TERM) falling 10 MiB/s: the KILL level is 19 s away (> 5 s horizon)."""
    j, rec = judge(thrash=False), Recording(390 * MIB)
    assert set(levels(j, rec, 30, d_avail_kib=-1 * MIB, swapout_mib_s=20)) == {Level.WARN}


def test_at_the_floor_with_stalls_kills() -> None:
    """MemAvailable pinned near zero (not falling any more) while swap is
    written, and everything stalls: KILL (the issue's 'no kill' row)."""
    j, rec = judge(thrash=False), Recording(60 * MIB)
    seen = levels(j, rec, 15, stall=0.4, swapout_mib_s=100)
    assert seen[-1] == Level.KILL


def test_relief_needs_history() -> None:
    j, rec = judge(thrash=False), Recording(380 * MIB)
    s, t, vm = rec.step(d_avail_kib=-20 * MIB)
    assert j.judge(s, t, vm).level == Level.WARN  # one point: nothing concluded


def test_relief_off_is_earlyoom_rule() -> None:
    j, rec = judge(relief=False, thrash=False), Recording(700 * MIB)
    assert Level.TERM not in levels(j, rec, 40, d_avail_kib=-11 * MIB, swapout_mib_s=40)


# -- thrash -------------------------------------------------------------------

def test_sustained_stall_with_swap_ins_terms_then_kills() -> None:
    """Above the TERM level (swap absorbs the growth), 50 % full stall and
    20 MiB/s of swap-ins: TERM within 2 s, KILL a bit later."""
    j, rec = judge(), Recording(600 * MIB)
    seen = levels(j, rec, 40, stall=0.5, swapin_mib_s=20, swapout_mib_s=20)
    t_term = seen.index(Level.TERM) * STEP
    t_kill = seen.index(Level.KILL) * STEP
    assert 1.0 <= t_term <= 2.5
    assert t_kill > t_term
    s, t, vm = rec.step(stall=0.5, swapin_mib_s=20)
    assert j.judge(s, t, vm).reason.startswith("thrash: full stall")


def test_file_refault_thrash_without_swap() -> None:
    j, rec = judge(), Recording(600 * MIB, swap_free_kib=0)
    seen = levels(j, rec, 30, stall=0.6, refault_mib_s=40)
    assert Level.TERM in seen


def test_a_single_stall_does_not_act() -> None:
    """One 0.8 s full stall with swap-ins, then quiet."""
    j, rec = judge(), Recording(600 * MIB)
    seen = levels(j, rec, 8, stall=1.0, swapin_mib_s=50)
    seen += levels(j, rec, 30, stall=0.0)
    assert max(seen) <= Level.WARN


def test_io_bound_job_with_plenty_of_memory_does_not_trigger() -> None:
    """A job streaming a big file: 35 % full memory stall from page cache
    refaults (60 MiB/s), no swap, but MemAvailable far above the WARN level:
    never acts (nohang's PSI rule killed here)."""
    j, rec = judge(), Recording(3 * GIB, swap_free_kib=0)
    assert set(levels(j, rec, 100, stall=0.35, refault_mib_s=60)) == {Level.OK}


def test_stall_without_swap_in_or_refault_does_not_trigger() -> None:
    """Stalls with no swap-in and no refault (reclaim of cold cache, a
    compaction burst): not thrash."""
    j, rec = judge(relief=False), Recording(600 * MIB)
    assert max(levels(j, rec, 50, stall=0.6, swapout_mib_s=30)) <= Level.WARN


def test_post_action_delay() -> None:
    j, rec = judge(), Recording(600 * MIB)
    seen = levels(j, rec, 25, stall=0.5, swapin_mib_s=20)
    assert Level.TERM in seen
    j.note_action(rec.t)
    assert max(levels(j, rec, 25, stall=0.5, swapin_mib_s=20)) <= Level.WARN  # 2.5 s < 3 s delay
    assert Level.TERM in levels(j, rec, 25, stall=0.5, swapin_mib_s=20)


def test_parse_vmstat() -> None:
    data = b"nr_free_pages 5\npswpin 12\npswpout 34\nworkingset_refault_anon 7\nworkingset_refault_file 56\n"
    assert parse_vmstat(data) == VmCounters(12, 34, 56, 7)
    assert parse_vmstat(b"workingset_refault 9\npswpin 1\n") == VmCounters(1, 0, 9, 0)  # < 5.9
    assert parse_vmstat(b"pswpin x\n") == VmCounters(0, 0, 0, 0)


def test_config_sections_validate() -> None:
    import pytest

    from pyoomd.errors import ConfigError
    from pyoomd.settings.load import settings_from_text

    s = settings_from_text("c.yaml", "thrash: {stall: 50%, duration: 2s}\nswap_relief: {horizon: 3s}\n")
    assert (s.thrash.stall, s.thrash.duration, s.swap_relief.horizon) == (50.0, 2.0, 3.0)
    with pytest.raises(ConfigError, match="thrash.stall"):
        settings_from_text("c.yaml", "thrash: {stall: 150%}\n")
    with pytest.raises(ConfigError, match="c.yaml:2: swap_relief"):
        settings_from_text("c.yaml", "psi: {}\nswap_relief: {window: 0s}\n")
