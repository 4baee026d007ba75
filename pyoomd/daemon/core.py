"""The Daemon: wiring only.  Builds the stages (sense, judge, act, report) and runs the loop; each
part of it is one concept in its own module of this package (see Daemon)."""

from __future__ import annotations

import collections
import os
import signal
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..act.cgroup_kill import GroupKiller
from ..act.kill import Guard, Killer
from ..judge.growth import GrowthTracker
from ..judge.make import make_judge
from ..judge.rank import NoPolicy, Policy
from ..model import MemSample
from ..sense.cgroup import Cgroups
from ..sense.facts import FreesReader
from ..sense.kmsg import KmsgFollower
from ..sense.procfs import Procfs
from ..sense.psi import Waiter
from ..sense.sample import Sampler
from ..sense.vmstat import Vmstat
from ..sense.zram import Zram
from ..settings.amounts import Thresholds
from .act import Act
from .base import Observer, State
from .follow import Follow
from .idle import Idle
from .kernel import KernelLog
from .killreport import KillReport
from .reload import Reload
from .soft import Soft
from .startup import Startup
from .tick import Tick, _approach

if TYPE_CHECKING:  # annotations only
    from ..policy.rules import Loaded
    from ..settings.schema import Settings

# Stopping while a reload is under way waits this long for it to end (and be
# logged as reloaded or reload_failed), no longer.
RELOAD_AT_EXIT_S = 5.0


class Daemon(Startup, KernelLog, Idle, Reload, Tick, Follow, Act, Soft, KillReport):
    """Wiring only: builds the stages and runs the loop; each part (daemon/*.py)
    holds one concept: start-up, the kernel log, the idle wait, reload, the
    tick, growth following, the act stage, soft actions, the kill report."""

    def __init__(self, settings: Settings, procfs: Procfs, sampler: Sampler, log: Any,
                 policy: Policy | None = None, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep, waiter: Waiter | None = None) -> None:
        self.settings = settings
        self.procfs = procfs
        self.sampler = sampler
        self.log = log
        self.policy: Policy = policy or NoPolicy()
        self.clock = clock
        # A PSI Waiter wakes the loop early when memory stalls begin (sense/psi.py).
        self.waiter = waiter
        self.sleep = waiter if waiter is not None else sleep
        self.zram = Zram(procfs)
        # /proc/vmstat's swap and refault counters, for the relief and thrash rules.
        self.vmstat = Vmstat(procfs)
        first = self.zram.adjust(sampler.read())
        self.thresholds: Thresholds = settings.compile(first.mem_total_kib, first.swap_total_kib)
        # (MemTotal, SwapTotal) the levels were resolved against: a swapon,
        # swapoff, memory hotplug or balloon changes them (see _check_totals).
        self.levels_totals: tuple[int, int] = (first.mem_total_kib, first.swap_total_kib)
        self.judge = make_judge(settings, self.thresholds)
        self.cgroups = Cgroups(procfs)
        # The last look before every signal (victim, group and cgroup members).
        self.guard = Guard(procfs, self._spare_now)
        self.killer = Killer(procfs, self._resample_level, self._killer_event, clock, self.guard)
        self.group_killer = GroupKiller(procfs, self.cgroups, self._resample_level, self._killer_event, clock,
                                        guard=self.guard)
        self.state = State()
        self.last_sample: MemSample = first
        g = settings.growth
        self.growth = GrowthTracker(first.mem_total_kib, g.weight, g.window, _approach(self.thresholds))
        self._followed = False  # a look happened since the last clear (young processes can be dated)
        self._follow_scores: dict[int, int] = {}
        self._follow_rise: dict[int, int] = {}  # pid -> its oom_score rise between the last two looks
        self._follow_last_pid: int | None = None  # the last pid handed out just before the last look
        self._followed_at = -1e9
        # Report-stage consumers (metrics, notifications, hooks, status): each
        # gets every event as (name, fields) after it is logged, and the
        # per-tick (sample, decision) for gauges.  They must not block.
        self.observers: list[Observer] = []
        # The act stage's pre-kill step: each gets the kill event's fields
        # just before the first signal, after the event is reported, and may
        # wait (bounded: hooks.pre_kill_wait).  Observers never block.
        self.pre_kill: list[Callable[[dict[str, Any]], None]] = []
        self.last_tick_s: float | None = None  # how long the last tick() took (run() measures)
        # SIGHUP (systemctl reload) calls this for fresh Settings; None: SIGHUP
        # is logged and ignored.  The reader and log format are not reopened.
        self.reloader: Callable[[], Settings] | None = None
        # SIGHUP also re-reads the policy files through this (see pyoomd.policy);
        # None: the policy given at construction stays.
        self.policy_loader: Callable[[Settings], Loaded] | None = None
        self.policy_loaded: Loaded | None = None
        # A reload under way (SIGHUP): its thread and what it brings back.
        self._reload_job: tuple[threading.Thread, dict[str, Any]] | None = None
        # The kernel OOM killer's own kills (sense/kmsg.py): its thread queues
        # (severity, event, fields) here and wakes the loop, which logs them.
        self.kmsg: KmsgFollower | None = None
        self.kernel_log_state = "not started"  # for the startup event
        self.kernel_reports: collections.deque[tuple[str, str, dict[str, Any]]] = collections.deque()
        # What the likely victim would free (USS + swap, psutil), read during
        # the approach in a thread (real time) or at once (an injected clock).
        self.frees = FreesReader(procfs, threaded=clock is time.monotonic, clock=clock)

    def use_policies(self, loaded: Loaded) -> None:
        """Put a loaded policy set in force (at start-up and on reload)."""
        self.policy = loaded.policy
        self.policy_loaded = loaded

    def _policy_fields(self) -> dict[str, Any]:
        return self.policy_loaded.summary() if self.policy_loaded is not None else {"policy": "none"}

    def _policy_findings(self) -> None:
        """Refused rules (names only, no pin) and warnings, one event each."""
        for f in self.policy_loaded.refused if self.policy_loaded else ():
            self.emit("warning", "policy_rule_refused", file=f.file, line=f.line, message=f.message)
        for f in self.policy_loaded.warnings if self.policy_loaded else ():
            self.emit("warning", "policy_warning", file=f.file, line=f.line, message=f.message)

    def emit(self, severity: str, event: str, **fields: Any) -> None:
        getattr(self.log, severity)(event, **fields)
        for obs in self.observers:
            try:
                obs.on_event(event, fields)
            except Exception as e:  # noqa: BLE001 - an observer must never stop the loop
                self.log.error("observer_failed", observer=type(obs).__name__, error=repr(e))

    # -- start-up --------------------------------------------------------------
    # -- the loop -------------------------------------------------------------
    # Sample in C between ticks while memory is plentiful (see _can_idle):
    # None = when the sampler can and the daemon runs on real time (an
    # injected clock or sleep means the caller drives time itself).
    use_idle_wait: bool | None = None

    def run(self) -> None:
        self._install_signals()
        idle = self.use_idle_wait
        if idle is None:
            idle = self.clock is time.monotonic and (self.sleep is time.sleep or self.sleep is self.waiter)
        idle_wait = getattr(self.sampler, "idle_wait", None) if idle else None
        wake_fd = self._signal_wakeup() if idle_wait is not None else None
        self.start_kernel_log()
        self.startup()
        sample: MemSample | None = None
        before: tuple[float, int] | None = None
        try:
            while not self.state.stop:
                job = self._reload_job
                if job is not None and "done" in job[1]:
                    self._finish_reload()
                if self.state.reload and self._reload_job is None:
                    self._start_reload()
                if self.kernel_reports:
                    self.report_kernel()
                t0 = time.perf_counter()
                pause = self.tick(sample, before)
                self.last_tick_s = time.perf_counter() - t0  # for the metrics' tick histogram
                sample, before = None, None
                if idle_wait is not None and self._can_idle():
                    got = self._idle(idle_wait, pause, wake_fd)
                    if got is not None:
                        sample = got.sample
                        if got.prev_age_s is not None:
                            before = (got.prev_age_s, got.prev_available_kib)
                else:
                    self.sleep(pause)
            job = self._reload_job
            if job is not None:  # stopping during a reload: say how it ended, if it ends soon
                job[0].join(RELOAD_AT_EXIT_S)
                if "done" in job[1]:
                    self._finish_reload()
        finally:
            self.stop_kernel_log()  # first: its thread writes to the wake pipe
            self._signal_wakeup_off()
            self.frees.close()
        self.report_kernel()
        self.emit("info", "shutdown", pid=os.getpid())

    # -- the kernel's own kills ----------------------------------------------
    def _install_signals(self) -> None:
        def stop(signum: int, frame: object) -> None:
            self.state.stop = True
        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)

        def reload(signum: int, frame: object) -> None:
            self.state.reload = True
        signal.signal(signal.SIGHUP, reload)

    # -- helpers for the killer ---------------------------------------------


