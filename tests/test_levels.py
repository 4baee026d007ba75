"""Levels follow MemTotal and SwapTotal (issue 11): a swapon after start, a
swapoff, memory hotplug or a balloon re-resolves the percentage levels, logs
``levels_changed`` and shows them in ``pyoomd status``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from helpers import FakeSampler
from logcapture import Log

from pyoomd.daemon import Daemon
from pyoomd.model import Level, MemSample, Pressure, PsiLine
from pyoomd.report.control import format_status, query
from pyoomd.report.reporters import Reporters
from pyoomd.sense.procfs import Procfs
from pyoomd.settings.load import settings_from_dict

GIB = 1 << 20  # KiB



def _daemon(tmp_path: Path, sample: MemSample, **cfg: Any) -> tuple[Daemon, FakeSampler, Log]:
    (tmp_path / "proc").mkdir(exist_ok=True)
    sampler, log = FakeSampler(sample), Log()
    settings = settings_from_dict({"dry_run": True, "status": {"socket": None}, **cfg})
    now = [100.0]

    def clock() -> float:
        now[0] += 0.5
        return now[0]

    return Daemon(settings, Procfs(str(tmp_path / "proc")), sampler, log, clock=clock), sampler, log


def test_swapon_after_start_gives_the_swap_levels_their_size(tmp_path: Path) -> None:
    d, sampler, log = _daemon(tmp_path, MemSample(16 * GIB, 8 * GIB, 0, 0))
    assert d.thresholds.swap_term_kib == 0 and d.thresholds.swap_kill_kib == 0
    d.tick()
    assert log.named("levels_changed") == []  # nothing changed: nothing logged
    sampler.sample = MemSample(16 * GIB, 8 * GIB, 2 * GIB, 2 * GIB)  # swapon of 2 GiB
    d.tick()
    (ev,) = log.named("levels_changed")
    assert ev["old"]["swap_term_kib"] == 0 and ev["new"]["swap_term_kib"] == 2 * GIB // 10
    assert ev["new"]["swap_kill_kib"] == 2 * GIB // 20
    assert ev["old_swap_total_kib"] == 0 and ev["swap_total_kib"] == 2 * GIB
    assert ev["new"]["mem_term_kib"] == ev["old"]["mem_term_kib"]  # MemTotal did not move
    assert d.thresholds.swap_term_kib == 2 * GIB // 10 and d.levels_totals == (16 * GIB, 2 * GIB)
    # The judge uses them: memory at TERM, swap 8 % free is below the new 10 %
    # level (with the old 0 KiB levels pyoomd would wait for swap to be full).
    sampler.sample = MemSample(16 * GIB, GIB, 2 * GIB, 2 * GIB * 8 // 100)
    assert d.judge.level_now(sampler.sample, 200.0) == Level.TERM
    d.tick()
    assert len(log.named("levels_changed")) == 1  # same totals: no second event


def test_swapoff_and_memory_hotplug_and_balloon(tmp_path: Path) -> None:
    d, sampler, log = _daemon(tmp_path, MemSample(16 * GIB, 8 * GIB, 4 * GIB, 4 * GIB))
    sampler.sample = MemSample(16 * GIB, 8 * GIB, 0, 0)  # swapoff
    d.tick()
    assert d.thresholds.swap_term_kib == 0
    sampler.sample = MemSample(32 * GIB, 24 * GIB, 0, 0)  # hotplug: twice the memory
    d.tick()
    assert d.thresholds.mem_term_kib == 32 * GIB // 10 and d.thresholds.mem_warn_kib == 32 * GIB // 5
    assert d.growth.mem_total_kib == 32 * GIB  # growth points stay relative to what there is
    assert d.idle_gate_kib() == 32 * GIB // 5
    sampler.sample = MemSample(12 * GIB, 6 * GIB, 0, 0)  # a balloon took 20 GiB back
    d.tick()
    assert d.thresholds.mem_kill_kib == 12 * GIB // 20
    changes = log.named("levels_changed")
    assert [(e["mem_total_kib"], e["swap_total_kib"]) for e in changes] == [
        (16 * GIB, 0), (32 * GIB, 0), (12 * GIB, 0)]
    assert changes[1]["old"]["mem_term_kib"] == 16 * GIB // 10


def test_the_psi_gate_follows_the_warn_level(tmp_path: Path) -> None:
    psi = Pressure(PsiLine(0.0, 0.0, 0.0, 0), PsiLine(0.0, 0.0, 0.0, 0))
    d, sampler, _ = _daemon(tmp_path, MemSample(16 * GIB, 8 * GIB, 0, 0, psi))
    assert d.judge.pressure is not None and d.judge.pressure.rule.gate_kib == 16 * GIB // 5
    sampler.sample = MemSample(8 * GIB, 4 * GIB, 0, 0, psi)
    d.tick()
    assert d.judge.pressure.rule.gate_kib == 8 * GIB // 5 and d.judge.th is d.thresholds


def test_sizes_stay_and_a_level_pair_that_no_longer_compiles_keeps_the_old_levels(tmp_path: Path) -> None:
    """term 10 %, kill 1 GiB: fine on 16 GiB; on 8 GiB KILL (1 GiB) would
    be above TERM (0.8 GiB): logged, the old levels stay in force."""
    d, sampler, log = _daemon(tmp_path, MemSample(16 * GIB, 8 * GIB, 0, 0),
                              memory={"term": "10%", "kill": "1G", "warn": "2G"})
    before = d.thresholds
    sampler.sample = MemSample(8 * GIB, 4 * GIB, 0, 0)
    d.tick()
    (failed,) = log.named("levels_change_failed")
    assert "memory.kill" in failed["error"] and failed["mem_total_kib"] == 8 * GIB
    assert d.thresholds == before and log.named("levels_changed") == []
    d.tick()
    assert len(log.named("levels_change_failed")) == 1  # once per change, not every tick


def test_status_shows_the_current_levels(tmp_path: Path) -> None:
    d, sampler, _log = _daemon(tmp_path, MemSample(16 * GIB, 8 * GIB, 0, 0),
                               status={"socket": str(tmp_path / "run" / "status.sock")})
    reporters = Reporters(d, [])
    d.observers.append(reporters)
    try:
        d.tick()
        doc = query(str(tmp_path / "run" / "status.sock"))
        assert doc["thresholds"]["swap_term_kib"] == 0 and doc["levels_for"]["swap_total_kib"] == 0
        sampler.sample = MemSample(16 * GIB, 8 * GIB, GIB, GIB)
        d.tick()
        doc = query(str(tmp_path / "run" / "status.sock"))
        assert doc["thresholds"]["swap_term_kib"] == GIB // 10 and doc["levels_for"]["swap_total_kib"] == GIB
        assert f"swap_term_kib {GIB // 10}" in format_status(doc)
        assert f"SwapTotal {GIB} KiB" in format_status(doc)
    finally:
        reporters.stop()
