"""The tick loop: the only module that wires sense, judge, act and report."""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

from . import selfprotect
from .act.kill import Killer, KillPlan
from .config import Settings, Thresholds
from .errors import ParseError
from .judge.decide import Judge, level_of
from .judge.rank import NoPolicy, Policy, order, score
from .model import Candidate, Decision, KillOutcome, Level, MemSample
from .report.log import kernel_style
from .sense import snapshot
from .sense.procfs import Procfs
from .sense.sample import Sampler

# A victim that did not exit within kill_timeout is left alone for this long
# (frozen cgroup, D state): re-trying it at once would loop forever.
STUCK_FORGET_S = 300.0
# Sample errors are logged at most this often, so a broken file cannot fill
# the journal at 500 lines a second.
ERROR_LOG_EVERY_S = 10.0


class Observer(Protocol):
    """A report-stage consumer (see Daemon.observers)."""

    def on_event(self, event: str, fields: dict[str, Any]) -> None: ...

    def on_tick(self, sample: MemSample, decision: Decision) -> None: ...


@dataclass
class Episode:
    """A pressure episode: from the first TERM level until memory is OK again."""

    kills: int = 0
    active: bool = False


@dataclass
class State:
    level: Level = Level.OK
    episode: Episode = field(default_factory=Episode)
    stuck: dict[tuple[int, int], float] = field(default_factory=dict)
    last_error_at: float = -1e9
    stop: bool = False


class Daemon:
    def __init__(self, settings: Settings, procfs: Procfs, sampler: Sampler, log: Any,
                 policy: Policy | None = None, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.settings = settings
        self.procfs = procfs
        self.sampler = sampler
        self.log = log
        self.policy: Policy = policy or NoPolicy()
        self.clock = clock
        self.sleep = sleep
        first = sampler.read()
        self.thresholds: Thresholds = settings.compile(first.mem_total_kib, first.swap_total_kib)
        self.judge = Judge(self.thresholds, settings.sampling)
        self.killer = Killer(procfs, self._resample_level, self._killer_event, clock)
        self.state = State()
        self.last_sample: MemSample = first
        # Report-stage consumers (metrics, notifications, hooks, status): each
        # gets every event as (name, fields) after it is logged, and the
        # per-tick (sample, decision) for gauges.  They must not block.
        self.observers: list[Observer] = []

    def emit(self, severity: str, event: str, **fields: Any) -> None:
        getattr(self.log, severity)(event, **fields)
        for obs in self.observers:
            try:
                obs.on_event(event, fields)
            except Exception as e:  # an observer must never stop the loop
                self.log.error("observer_failed", observer=type(obs).__name__, error=repr(e))

    # -- start-up --------------------------------------------------------------
    def startup(self) -> None:
        adj = selfprotect.set_oom_score_adj(self.procfs)
        mlock = selfprotect.lock_memory()
        for what, result in (("oom_score_adj", adj), ("mlockall", mlock)):
            if result != "ok":
                self.emit("warning", "self_protect_failed", what=what, result=result)
        th, s = self.thresholds, self.settings
        self.emit("info", "startup", pid=os.getpid(), dry_run=s.dry_run, reader=self.sampler.backend,
            mem_total_kib=self.last_sample.mem_total_kib, swap_total_kib=self.last_sample.swap_total_kib,
            mem_term=str(s.memory.term), mem_kill=str(s.memory.kill), mem_warn=str(s.memory.warn),
            swap_term=str(s.swap.term), swap_kill=str(s.swap.kill),
            mem_term_kib=th.mem_term_kib, mem_kill_kib=th.mem_kill_kib, mem_warn_kib=th.mem_warn_kib,
            swap_term_kib=th.swap_term_kib, swap_kill_kib=th.swap_kill_kib,
            min_interval_s=s.sampling.min_interval, max_interval_s=s.sampling.max_interval,
            min_rate_mib_s=s.sampling.min_rate_mib_s, grace_s=s.kill.grace,
            psi=self.last_sample.psi is not None, oom_score_adj=adj, mlockall=mlock,
            self_test=self.self_test(),
        )

    def self_test(self) -> str:
        """Signal 0 to the top candidate: proves /proc and kill permissions."""
        table = self.scan(top_n=1)
        if not table:
            return "no candidate to test"
        top = table[0].proc
        opened = self.killer.open_verified(top.pid, top.start_time)
        if isinstance(opened, str):
            return f"pid {top.pid}: {opened}"
        try:
            signal.pidfd_send_signal(opened, 0)
            return f"ok (pid {top.pid} {top.comm})"
        except OSError as e:
            return f"cannot signal pid {top.pid}: {os.strerror(e.errno or 0)}"
        finally:
            os.close(opened)

    # -- the loop -------------------------------------------------------------
    def run(self) -> None:
        self._install_signals()
        self.startup()
        while not self.state.stop:
            self.sleep(self.tick())
        self.emit("info", "shutdown", pid=os.getpid())

    def _install_signals(self) -> None:
        def stop(signum: int, frame: object) -> None:
            self.state.stop = True
        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)

    def tick(self) -> float:
        """One trip: sense, judge, maybe act.  Returns seconds to sleep."""
        now = self.clock()
        try:
            sample = self.sampler.read()
        except (OSError, ParseError) as e:
            if now - self.state.last_error_at >= ERROR_LOG_EVERY_S:
                self.state.last_error_at = now
                self.emit("error", "sample_error", error=str(e))
            return self.settings.sampling.min_interval * 10
        self.last_sample = sample
        decision = self.judge.judge(sample, now)
        for obs in self.observers:
            try:
                obs.on_tick(sample, decision)
            except Exception as e:
                self.log.error("observer_failed", observer=type(obs).__name__, error=repr(e))
        self._track_level(decision.level, decision.reason, sample)
        if decision.level >= Level.TERM:
            return self._act(decision.level, decision.reason)
        return decision.sleep_s

    def _track_level(self, level: Level, reason: str, sample: MemSample) -> None:
        prev = self.state.level
        self.state.level = level
        if level >= Level.TERM and prev < Level.TERM:
            self.state.episode = Episode(active=True)
            self.emit("warning", "low_memory", level=level.name, reason=reason,
                             mem_available_kib=sample.mem_available_kib, swap_free_kib=sample.swap_free_kib)
        elif level == Level.OK and self.state.episode.active:
            self.emit("info", "memory_recovered", kills=self.state.episode.kills,
                          mem_available_kib=sample.mem_available_kib)
            self.state.episode = Episode()

    def scan(self, top_n: int) -> list[Candidate]:
        table = snapshot.scan(self.procfs, lambda p: score(p, self.policy), self.policy.max_bonus, top_n)
        now = self.clock()
        self.state.stuck = {k: t for k, t in self.state.stuck.items() if now - t < STUCK_FORGET_S}
        return [c for c in order(table.candidates) if c.proc.identity not in self.state.stuck]

    def _act(self, level: Level, reason: str) -> float:
        cands = self.scan(top_n=max(1, self.settings.report_top))
        if not cands:
            self.emit("error", "no_candidate", level=level.name, reason=reason)
            return self.settings.sampling.max_interval
        victim = cands[0]
        plan = KillPlan(self.settings.kill.grace, self.settings.kill.kill_timeout, self.settings.dry_run)

        def on_first(sig: str, level_now: Level) -> None:
            self.state.episode.kills += 1
            self._log_kill(victim, sig, level_now, cands, reason)

        outcome = self.killer.kill(victim, plan, on_first)
        return self._after(victim, outcome, plan)

    def _after(self, victim: Candidate, outcome: KillOutcome, plan: KillPlan) -> float:
        if outcome.skipped:
            self.emit("info", "kill_skipped", pid=victim.proc.pid, comm=victim.proc.comm, reason=outcome.skipped)
            return self.settings.sampling.min_interval
        if outcome.dry_run:
            return plan.grace_s  # as if we had waited for the victim
        if outcome.exited:
            self.emit("info", "victim_exited", pid=victim.proc.pid, comm=victim.proc.comm,
                          ms=outcome.ms_to_exit, signals=list(outcome.signals))
            self.judge.forget_rates()
            return self.settings.kill.settle
        self.state.stuck[victim.proc.identity] = self.clock()
        self.emit("error", "victim_stuck", pid=victim.proc.pid, comm=victim.proc.comm,
                       signals=list(outcome.signals), timeout_s=plan.kill_timeout_s)
        return self.settings.sampling.min_interval

    def _log_kill(self, victim: Candidate, sig: str, level: Level, cands: list[Candidate], reason: str) -> None:
        p = victim.proc
        dry = self.settings.dry_run
        top = [_cand_row(c) for c in cands[: self.settings.report_top]]
        self.emit("warning", "kill", pid=p.pid, comm=p.comm, cmdline=p.cmdline, uid=p.uid, exe=p.exe, cgroup=p.cgroup,
            signal=sig, dry_run=dry, level=level.name, oom_score=p.oom_score,
            oom_score_adj=p.oom_score_adj, badness=victim.badness, rules=list(victim.rules),
            rss_kib=p.rss_kib, swap_kib=p.swap_kib, reason=reason, why=" ".join(victim.reasons),
            episode_kills=self.state.episode.kills, candidates=top,
        )
        mem = None if dry else snapshot.read_kernel_mem(self.procfs, p.pid)
        if mem is not None:
            self.emit("warning", "killed_process", line=kernel_style(p.pid, p.comm, p.uid, *mem))

    # -- helpers for the killer ---------------------------------------------
    def _resample_level(self) -> Level:
        try:
            sample = self.sampler.read()
        except (OSError, ParseError):
            return self.state.level  # keep the last known level
        self.last_sample = sample
        return level_of(sample, self.thresholds)[0]

    def _killer_event(self, event: str, **kw: object) -> None:
        self.emit("warning", event, **kw)


def _cand_row(c: Candidate) -> dict[str, object]:
    p = c.proc
    return {"pid": p.pid, "comm": p.comm, "badness": c.badness, "oom_score": p.oom_score,
            "oom_score_adj": p.oom_score_adj, "rss_kib": p.rss_kib, "rules": list(c.rules)}
