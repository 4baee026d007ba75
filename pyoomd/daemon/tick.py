"""One tick: sense (or the idle wait's sample), judge, follow the level and
the totals, then act when the level says so; the act stage's sample function."""

from __future__ import annotations

import dataclasses

from ..errors import ConfigError, ParseError
from ..model import Level, MemSample
from ..sense.zram import Zram
from ..settings.amounts import Thresholds
from .base import DaemonParts, Episode

# Sample errors are logged at most this often, so a broken file cannot fill
# the journal at 500 lines a second.
ERROR_LOG_EVERY_S = 10.0


class Tick(DaemonParts):
    """One part of the Daemon (daemon/core.py), as the module docstring says."""

    def tick(self, sample: MemSample | None = None, before: tuple[float, int] | None = None) -> float:
        """One trip: sense, judge, maybe act.  Returns seconds to sleep.
        ``sample``: one already taken (by the idle wait) instead of reading;
        ``before``: (seconds older, MemAvailable) of the sample the idle wait
        took before it, so the fill rate covers the last step of a decline."""
        now = self.clock()
        if sample is None:
            try:
                sample = self.sampler.read()
            except (OSError, ParseError) as e:
                if now - self.state.last_error_at >= ERROR_LOG_EVERY_S:
                    self.state.last_error_at = now
                    self.emit("error", "sample_error", error=str(e))
                return self.settings.sampling.min_interval * 10
        self._check_totals(sample)
        sample = self.zram.adjust(sample)
        self.last_sample = sample
        if before is not None:
            # Swap as now: the idle wait follows MemAvailable only.
            self.judge.note_earlier(now - before[0], sample._replace(mem_available_kib=before[1]))
        decision = self.judge.judge(sample, now, self.vmstat.read())
        for obs in self.observers:
            try:
                obs.on_tick(sample, decision)
            except Exception as e:  # noqa: BLE001 - an observer must never stop the loop
                self.log.error("observer_failed", observer=type(obs).__name__, error=repr(e))
        self._track_level(decision.level, decision.reason, sample)
        self._follow_growth(decision.level, now, sample, before)
        if decision.level >= Level.TERM and self._releasing(sample, now):
            return self.settings.sampling.min_interval
        if decision.level >= Level.TERM:
            try:
                return self._act(decision.level, decision.reason)
            except OSError as e:  # /proc unlistable (EMFILE, ENOMEM under pressure): retry, never die
                if now - self.state.last_error_at >= ERROR_LOG_EVERY_S:
                    self.state.last_error_at = now
                    self.emit("error", "act_error", error=str(e))
                return self.settings.sampling.min_interval * 10
        return decision.sleep_s

    def _check_totals(self, sample: MemSample) -> None:
        """Levels written as percentages follow MemTotal and SwapTotal: a
        swapon after start (zram-generator, a swap file) must not leave the
        swap levels at 0 KiB (systemd#36704), nor a swapoff, memory hotplug
        or a balloon leave them sized for memory that is gone.  Re-resolved
        on the first sample that shows other totals; the rate history and
        the PSI timers stay.  Levels that no longer compile (a KILL size
        above a TERM percentage of the new total) are logged and the old
        ones kept."""
        totals = (sample.mem_total_kib, sample.swap_total_kib)
        old_totals = self.levels_totals
        if totals == old_totals:
            return
        self.levels_totals = totals
        changed = {"mem_total_kib": totals[0], "swap_total_kib": totals[1],
                   "old_mem_total_kib": old_totals[0], "old_swap_total_kib": old_totals[1]}
        if totals[1] != old_totals[1]:
            self.zram = Zram(self.procfs)  # a zram device swapped on (or off)
        try:
            th = self.settings.compile(*totals)
        except (ConfigError, ValueError) as e:
            self.emit("error", "levels_change_failed", error=str(e), kept=dataclasses.asdict(self.thresholds),
                      **changed)
            return
        old, self.thresholds = self.thresholds, th
        self.judge.use_thresholds(th)
        self.growth.mem_total_kib = max(1, totals[0])
        self.growth.approach_kib = _approach(th)
        self.emit("info", "levels_changed", old=dataclasses.asdict(old), new=dataclasses.asdict(th),
                  zram=self.zram.active, **changed)

    def _releasing(self, sample: MemSample, now: float) -> bool:
        """True while the last victim's memory is still on its way back (see
        kill.release_timeout): judging now would pick a second victim for
        the pressure the first one's death is about to relieve."""
        rel = self.state.release
        if rel is None:
            return False
        deadline, back_then, expect_kib = rel
        # USS comes back as MemAvailable, swap as SwapFree.
        if now < deadline and sample.mem_available_kib + sample.swap_free_kib - back_then < expect_kib:
            return True
        self.state.release = None
        return False

    def _track_level(self, level: Level, reason: str, sample: MemSample) -> None:
        prev = self.state.level
        self.state.level = level
        if level >= Level.TERM and prev < Level.TERM:
            self.state.episode = Episode(active=True)
            self.emit("warning", "low_memory", oom_level=level.name, reason=reason,
                             mem_available_kib=sample.mem_available_kib, swap_free_kib=sample.swap_free_kib)
        elif level == Level.OK and self.state.episode.active:
            self.emit("info", "memory_recovered", kills=self.state.episode.kills,
                          mem_available_kib=sample.mem_available_kib)
            self.state.episode = Episode()

    def _resample_level(self) -> Level:
        try:
            sample = self.sampler.read()
        except (OSError, ParseError):
            return self.state.level  # keep the last known level
        sample = self.zram.adjust(sample)
        self.last_sample = sample
        return self.judge.level_now(sample, self.clock(), self.vmstat.read())

    def _killer_event(self, event: str, **kw: object) -> None:
        self.emit("warning", event, **kw)


def _approach(th: Thresholds) -> int:
    """WARN - TERM: the decline the approach to TERM is made of."""
    return max(1, th.mem_warn_kib - th.mem_term_kib)

