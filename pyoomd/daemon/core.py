"""The tick loop: the only module that wires sense, judge, act and report."""

from __future__ import annotations

import collections
import dataclasses
import functools
import heapq
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from ..act import selfprotect
from ..act.cgroup_kill import GroupKiller
from ..act.kill import Guard, Killer, KillPlan
from ..errors import ConfigError, ParseError
from ..judge import fairshare
from ..judge.cgroupchoice import choose_leaf
from ..judge.choose import Scoring, choose
from ..judge.decide import RATE_SAFETY, RATE_STEP_S, RATE_WINDOW_S
from ..judge.growth import NO_ATTRIBUTION, Attribution, GrowthTracker
from ..judge.make import make_judge
from ..judge.rank import NoPolicy, Policy
from ..model import Candidate, Decision, Excluded, KillOutcome, Level, MemSample, ProcInfo
from ..sense import snapshot
from ..sense.cgroup import CgroupRef, Cgroups, LeafStat
from ..sense.facts import FreesReader
from ..sense.kmsg import KmsgFollower
from ..sense.procfs import Procfs
from ..sense.psi import Waiter
from ..sense.sample import IdleParams, IdleResult, Sampler
from ..sense.vmstat import Vmstat
from ..sense.zram import Zram
from ..settings.amounts import Thresholds
from ..settings.trust import program_problem

if TYPE_CHECKING:  # annotations only
    from ..policy.rules import Loaded
    from ..settings.schema import Settings

# A victim that did not exit within kill_timeout is left alone for this long
# (frozen cgroup, D state): re-trying it at once would loop forever.
STUCK_FORGET_S = 300.0
# Warm ranking (Daemon.warm): the follower's last look stands in for pass 1
# of the scan while it is at most this many growth intervals old, with at
# least this much slack (oom_score points, 1/1000 of memory each) for a
# process's rise since the look.
WARM_MAX_AGE = 2.0
WARM_SLACK = 20
# The likely victim's USS + swap (FreesReader) is read once, again only
# after this long: the kill event's frees_kib adds what its RSS + swap grew
# by since.  Each read walks its page tables (25-290 ms for 0.7-0.8 GiB in
# the crowd benchmark on this 2-CPU machine), CPU taken from the loop's
# other threads and the hog alike.
FREES_REREAD_S = 30.0
# ... for the best of this many of the look's biggest processes (by oom_score).
FREES_TOP = 3
# Sample errors are logged at most this often, so a broken file cannot fill
# the journal at 500 lines a second.
ERROR_LOG_EVERY_S = 10.0
# While memory is above the WARN level the loop samples in C (Sampler.idle_wait)
# and comes back to Python for a tick at least this often; sooner when an
# observer asks for it (its ``idle_every_s``: metrics, memory reports; the
# watchdog is pinged from inside the wait, and a status request wakes it
# through ``wake``).  At the OK level the daemon itself has nothing
# periodic to do; each such tick costs ~300 us of CPU (cold caches), so a
# short period would cost more than the sampling (README, Sampling).
IDLE_HOUSEKEEPING_S = 60.0
# Stopping while a reload is under way waits this long for it to end (and be
# logged as reloaded or reload_failed), no longer.
RELOAD_AT_EXIT_S = 5.0


class Observer(Protocol):
    """A report-stage consumer (see Daemon.observers)."""

    def on_event(self, event: str, fields: dict[str, Any]) -> None: ...

    def on_tick(self, sample: MemSample, decision: Decision) -> None: ...


@dataclass
class Episode:
    """A pressure episode: from the first TERM level until memory is OK again."""

    kills: int = 0
    active: bool = False
    # Victims (pid, start time) whose soft action ran: one per victim per episode.
    soft_done: set[tuple[int, int]] = field(default_factory=set)


@dataclass
class State:
    level: Level = Level.OK
    episode: Episode = field(default_factory=Episode)
    stuck: dict[tuple[int, int], float] = field(default_factory=dict)
    last_error_at: float = -1e9
    stop: bool = False
    reload: bool = False
    # After a victim exited: (deadline, MemAvailable + SwapFree then, KiB
    # expected back: its frees_kib, or half its RSS + swap when unknown).
    release: tuple[float, int, int] | None = None
    # The victim being acted on: (identity, frees_kib or None), from _log_kill.
    frees: tuple[tuple[int, int], int | None] | None = None


class Daemon:
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
            wakeup=self.waiter.mode if self.waiter is not None else "sampling only",
            psi_rule=_psi_desc(s), zram=self.zram.active,
            swap_relief=_relief_desc(s), thrash=_thrash_desc(s), kernel_log=self.kernel_log_state,
            cgroup_choice=f"{s.cgroup_choice.by} below {s.cgroup_choice.root}" if s.cgroup_choice.enabled else "off",
            growth=(f"weight {s.growth.weight:g} over {s.growth.window:g}s, following between warn and term"
                    if s.growth.enabled else "off"),
            self_test=self.self_test(), **self._policy_fields(),
        )
        self._warn_raised()
        self._policy_findings()

    def _warn_raised(self) -> None:
        """A WARN level configured at or below TERM was raised above it
        (settings.amounts.warn_level_kib): say so, with both levels."""
        th = self.thresholds
        if th.mem_warn_asked_kib is not None:
            self.emit("warning", "warn_level_raised", mem_warn=str(self.settings.memory.warn),
                      mem_warn_asked_kib=th.mem_warn_asked_kib, mem_term_kib=th.mem_term_kib,
                      mem_warn_kib=th.mem_warn_kib,
                      message=(f"memory.warn ({th.mem_warn_asked_kib} KiB) is at or below memory.term "
                               f"({th.mem_term_kib} KiB): WARN raised to {th.mem_warn_kib} KiB, so growth "
                               f"following and the PSI gate have room"))

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
    def start_kernel_log(self) -> None:
        """Follow the kernel log for the kernel OOM killer's kills (off with
        kernel_log.enabled: false).  Unreadable (no CAP_SYSLOG, a container
        without /dev/kmsg): one warning, and the daemon runs on without it."""
        cfg = getattr(self.settings, "kernel_log", None)
        if cfg is None or not cfg.enabled:
            self.kernel_log_state = "off"
            return
        follower = KmsgFollower(self._kernel_report, cfg.path)
        why = follower.open()
        if why is not None:
            self.kernel_log_state = f"unavailable: {why}"
            self.emit("warning", "kernel_log_unavailable", path=cfg.path, error=why,
                      message="kernel OOM kills will not be reported")
            return
        self.kmsg = follower.start()
        self.kernel_log_state = f"following {cfg.path}"

    def stop_kernel_log(self) -> None:
        if self.kmsg is not None:
            self.kmsg.stop()
            self.kmsg = None

    def _kernel_report(self, severity: str, event: str, fields: dict[str, Any]) -> None:
        """From the follower's thread: queue it for the loop, and wake it."""
        self.kernel_reports.append((severity, event, fields))
        self.wake()

    def report_kernel(self) -> None:
        """In the loop: log what the follower found (kernel_oom_kill, ...)."""
        while self.kernel_reports:
            severity, event, fields = self.kernel_reports.popleft()
            self.emit(severity, event, **fields)

    def _can_idle(self) -> bool:
        """Only at the OK level with nothing pending: above WARN no kill, PSI
        rule or growth following can start (see idle_gate_kib)."""
        st = self.state
        # The wait for a victim's memory is pending until its deadline (the
        # tick clears it only at TERM and below, where it is used).
        releasing = st.release is not None and self.clock() < st.release[0]
        return (st.level == Level.OK and not releasing and not st.episode.active
                and not st.reload and not st.stop)

    def idle_gate_kib(self) -> int:
        """The highest MemAvailable at which anything can start: the WARN
        level (growth following starts there, the PSI rule counts only at or
        below it, TERM and KILL are at or below it)."""
        th = self.thresholds
        gate = max(th.mem_warn_kib, th.mem_term_kib, th.mem_kill_kib)
        pressure = getattr(self.judge, "pressure", None)
        if pressure is not None:
            gate = max(gate, pressure.rule.gate_kib)
        return gate

    def idle_timeout_s(self) -> float:
        """How long the idle wait may last: IDLE_HOUSEKEEPING_S, or less if an
        observer needs ticks more often (``idle_every_s``)."""
        every = [IDLE_HOUSEKEEPING_S]
        for obs in self.observers:
            if self._pinger_spec(obs) is not None:
                continue  # the idle wait pings the watchdog itself
            want = getattr(obs, "idle_every_s", None)
            if want is not None and want > 0:
                every.append(float(want))
        return max(self.settings.sampling.min_interval, min(every))

    def _idle(self, idle_wait: Callable[[IdleParams], IdleResult], pause: float,
              wake_fd: int | None) -> IdleResult | None:
        """Sleep ``pause``, then sample in C until there is something to judge.
        Returns the sample for the next tick, or None when sampling failed
        (the tick reads again and reports the error)."""
        s = self.settings.sampling
        waiter = self.waiter
        psi_fd = getattr(waiter, "fd", None)
        pinger = next((o for o in self.observers if self._pinger_spec(o) is not None), None)
        ping = self._pinger_spec(pinger) if pinger is not None else None
        params = IdleParams(
            gate_kib=self.idle_gate_kib(), timeout_s=self.idle_timeout_s(), first_sleep_s=pause,
            min_interval_s=s.min_interval, max_interval_s=s.max_interval,
            min_rate_kib_s=s.min_rate_mib_s * 1024.0, max_rate_kib_s=s.max_rate_mib_s * 1024.0,
            rate_kib_s=self.judge.mem_rate_kib_s(), rate_safety=RATE_SAFETY,
            rate_step_s=RATE_STEP_S, rate_window_s=RATE_WINDOW_S, psi_fd=psi_fd, wake_fd=wake_fd,
            notify_fd=ping[0] if ping else None, notify_every_s=ping[1] if ping else 0.0,
            notify_last_s=ping[2] if ping else 0.0)
        try:
            got = idle_wait(params)
        except (OSError, ParseError):
            return None
        finally:
            _drain(wake_fd)
        if got.reason == "psi" and waiter is not None:
            waiter.note(got.revents)
        if got.pings and pinger is not None:
            pinger.pinged(got.notify_last_s)
        return got

    @staticmethod
    def _pinger_spec(obs: object) -> tuple[int, float, float] | None:
        """An observer's watchdog ping request (report/sdnotify.py idle_ping)."""
        idle_ping = getattr(obs, "idle_ping", None)
        return idle_ping() if idle_ping is not None else None

    def _signal_wakeup(self) -> int | None:
        """A non-blocking pipe that Python's C-level signal handler writes to
        (signal.set_wakeup_fd): the idle wait polls it, so a SIGTERM or SIGHUP
        ends the wait even when it lands just before the wait begins (EINTR
        alone would miss that one).  None where it cannot be set (not the
        main thread, or someone else's fd is in place)."""
        self._wake_pipe: tuple[int, int] | None = None
        try:
            r, w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:
            return None
        try:
            old = signal.set_wakeup_fd(w, warn_on_full_buffer=False)
        except ValueError:  # not the main thread
            old = None
        if old is None or old != -1:
            if old is not None:
                signal.set_wakeup_fd(old)
            os.close(r)
            os.close(w)
            return None
        self._wake_pipe = (r, w)
        return r

    def wake(self) -> None:
        """End the idle wait now (from any thread: the status socket asks for
        a fresh sample).  Outside run(), or on the non-idle path (which
        sleeps at most sampling.max_interval), there is nothing to end."""
        pipe = getattr(self, "_wake_pipe", None)
        if pipe is not None:
            try:
                os.write(pipe[1], b"w")
            except OSError:
                pass  # full (a wake is already pending) or closed (run() ended)

    def _signal_wakeup_off(self) -> None:
        pipe = getattr(self, "_wake_pipe", None)
        if pipe is not None:
            try:
                signal.set_wakeup_fd(-1)
            except ValueError:
                pass
            os.close(pipe[0])
            os.close(pipe[1])
            self._wake_pipe = None

    def reload(self) -> None:
        """Re-read the configuration now, waiting for it; a bad one is logged
        and the running one kept (a killer must not die of a typo).  The
        loop itself does not wait: see _start_reload."""
        if self._start_reload():
            assert self._reload_job is not None
            self._reload_job[0].join()
            self._finish_reload()

    def _start_reload(self) -> bool:
        """SIGHUP: ask ``reloader`` for fresh settings in a thread.  It runs
        the compile child (pyoomd.daemon.launch: ~0.2 s, as long as a slow disk makes
        it, killed after 30 s); meanwhile the loop goes on sampling and
        killing with what it has, and the thread wakes it when done.  False
        when nothing was started."""
        self.state.reload = False
        if self.reloader is None:
            self.emit("warning", "reload_unsupported")
            return False
        self.emit("info", "reloading")
        reloader, box = self.reloader, {}

        def work() -> None:
            try:
                box["settings"] = reloader()
            except Exception as e:  # noqa: BLE001 - reported by _finish_reload, in the loop
                box["error"] = e
            finally:
                box["done"] = True  # before the wake: the loop must see it done once woken
                self.wake()

        job = threading.Thread(target=work, name="pyoomd-reload", daemon=True)
        self._reload_job = (job, box)
        job.start()
        return True

    def _finish_reload(self) -> None:
        """In the loop, once the reload thread is done: put the new settings
        in force, or log why not and keep the running ones."""
        assert self._reload_job is not None
        box = self._reload_job[1]
        self._reload_job = None
        try:
            if "error" in box:
                raise box["error"]
            settings = box["settings"]
            thresholds = settings.compile(self.last_sample.mem_total_kib, self.last_sample.swap_total_kib)
            loaded = self.policy_loader(settings) if self.policy_loader is not None else None
        except Exception as e:  # noqa: BLE001 - ConfigError, ValueError, or anything: never die of a reload
            error = str(e) if isinstance(e, (ConfigError, ValueError)) else f"{type(e).__name__}: {e}"
            self.emit("error", "reload_failed", error=error, dry_run=self.settings.dry_run,
                      **self._policy_fields())
            return
        if loaded is not None:
            self.use_policies(loaded)
        old_kernel_log = getattr(self.settings, "kernel_log", None)
        self.settings, self.thresholds = settings, thresholds
        self.judge = make_judge(settings, thresholds)
        if getattr(settings, "kernel_log", None) != old_kernel_log and self.kernel_log_state != "not started":
            self.stop_kernel_log()
            self.start_kernel_log()
        self.growth.weight, self.growth.window_s = settings.growth.weight, settings.growth.window
        self.growth.approach_kib = _approach(thresholds)
        self.emit("info", "reloaded", dry_run=settings.dry_run, mem_term_kib=thresholds.mem_term_kib,
                  mem_kill_kib=thresholds.mem_kill_kib, mem_warn_kib=thresholds.mem_warn_kib,
                  swap_term_kib=thresholds.swap_term_kib, swap_kill_kib=thresholds.swap_kill_kib,
                  grace_s=settings.kill.grace, **self._policy_fields())
        self._warn_raised()
        self._policy_findings()

    def _install_signals(self) -> None:
        def stop(signum: int, frame: object) -> None:
            self.state.stop = True
        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)

        def reload(signum: int, frame: object) -> None:
            self.state.reload = True
        signal.signal(signal.SIGHUP, reload)

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
            except Exception as e:
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

    def _follow_growth(self, level: Level, now: float, sample: MemSample,
                       before: tuple[float, int] | None = None) -> None:
        """Between WARN and TERM, follow the biggest, the growing and the new
        processes (cheaply, once per growth.interval); at WARN and below,
        MemAvailable on every tick (the decline to attribute); back at OK,
        forget them.  At TERM and above the history so far decides: a look
        there would read every oom_score once more just before the scan
        that picks the victim (measured: 109 -> 282 ms to the kill among
        10,000 processes); the scan dates processes born since the last
        look from their start time instead (judge/growth.py)."""
        cfg = self.settings.growth
        if not cfg.enabled:
            return
        if level < Level.WARN:
            if len(self.growth) or self._followed:
                self.growth.clear()
                self._follow_scores = {}
                self._followed = False
            return
        if before is not None and not self._followed:
            self.growth.observe_available(now - before[0], before[1])  # the idle wait's last one above
        self.growth.observe_available(now, sample.mem_available_kib)
        if level >= Level.TERM or now - self._followed_at < cfg.interval:
            return
        self._followed_at = now
        before_scores = self._follow_scores
        self._follow_last_pid = snapshot.read_last_pid(self.procfs)  # before the look: none born is missed
        seen, self._follow_scores = snapshot.follow(self.procfs, snapshot.default_skip(self.procfs),
                                                    self._follow_scores, cfg.follow_top)
        self._follow_rise = {pid: s - before_scores[pid] for pid, s in self._follow_scores.items()
                             if pid in before_scores and s > before_scores[pid]}
        uptime = snapshot.read_uptime_s(self.procfs)
        for ident, mem_kib in seen:
            born = None if uptime is None else now - (uptime - ident[1] / snapshot.CLOCK_TICKS)
            self.growth.observe(now, ident, mem_kib, born)
        self._followed = True
        self.growth.prune(now)
        self._prefetch_frees()

    def _prefetch_frees(self) -> None:
        """Right after a look during the approach: of the FREES_TOP biggest
        processes by the look's oom_score, the one the choice's rules rank
        first (policies, growth, cgroup preferences: Scoring.evaluate), and
        what its death would free, read by the FreesReader (in its thread:
        the loop goes on sampling).  The kill event's frees_kib comes from
        there.  A few reads on the loop, not a scan: 3.4 ms a look among
        10,000 processes here (integration/bench/frees_cost.py)."""
        if not self._follow_scores:
            return
        top = heapq.nlargest(FREES_TOP, self._follow_scores.items(), key=lambda kv: kv[1])
        scoring = self.scoring()
        best: Candidate | None = None
        for pid, oom_score in top:
            info = snapshot.read_proc(self.procfs, pid, oom_score)
            if info is None or info.identity in self.state.stuck:
                continue
            verdict = scoring.evaluate(info)
            if isinstance(verdict, Candidate) and (best is None or verdict.badness > best.badness):
                best = verdict
        if best is not None:
            self.frees.want(best.proc, FREES_REREAD_S)

    def attribution(self) -> Attribution:
        """The growth terms now (none when growth is off).  Processes never
        followed are dated from their start time only once a look happened
        (a daemon that starts below TERM saw no decline: the kernel's order)."""
        if not self.settings.growth.enabled:
            return NO_ATTRIBUTION
        uptime = snapshot.read_uptime_s(self.procfs) if self._followed else None
        return self.growth.attribution(self.clock(), uptime, snapshot.CLOCK_TICKS)

    def scoring(self) -> Scoring:
        """What the choice depends on now (judge/choose.py): the daemon's and
        the tools' one path."""
        pref = None
        if self.settings.cgroups.preferences:
            pref = self.cgroups.preference_of_path
        last = self._follow_scores if self.settings.growth.enabled and self._followed else None
        return Scoring(self.policy, self.attribution(), pref, last)

    def warm(self) -> snapshot.Warm | None:
        """The growth follower's last look, if recent enough to rank from
        (issue 11: the victim ready at the crossing).  Its scores stand in
        for one oom_score read per process, each with WARM_SLACK points of
        slack plus twice its own rise between the last two looks, scaled to
        the look's age (a process rising steadily is read; one that starts
        to rise by more than that within a second of a look is missed until
        the next cold scan)."""
        cfg = self.settings.growth
        age = self.clock() - self._followed_at
        if not (cfg.enabled and self._followed and self._follow_scores) or age > WARM_MAX_AGE * cfg.interval:
            return None
        looks = max(1.0, age / cfg.interval)
        rising = {pid: int(2 * r * looks) + 1 for pid, r in self._follow_rise.items()}
        return snapshot.Warm(self._follow_scores, int(WARM_SLACK * looks) + 1, rising, self._follow_last_pid)

    def _spare_now(self, proc: ProcInfo) -> str | None:
        """Why ``proc`` must not get a signal now (policy protect, an omitted
        cgroup, -1000), or None: the choice's own rules, read again just
        before each signal (act/kill.py Guard)."""
        pref = self.cgroups.preference_of_path if self.settings.cgroups.preferences else None
        verdict = Scoring(self.policy, preference=pref).evaluate(proc)
        return verdict.why if isinstance(verdict, Excluded) else None

    def scan(self, top_n: int, only: set[int] | None = None) -> list[Candidate]:
        """The best candidates; ``only``: restrict to these pids (cgroup choice)."""
        skip = snapshot.default_skip(self.procfs)
        if only is not None:
            skip |= set(self.procfs.pids()) - only
        read = functools.partial(snapshot.scan, self.procfs, skip=skip, warm=self.warm())
        choice = choose(self.scoring(), read, top_n)
        now = self.clock()
        self.state.stuck = {k: t for k, t in self.state.stuck.items() if now - t < STUCK_FORGET_S}
        return [c for c in choice.ranked if c.proc.identity not in self.state.stuck]

    def _choose_cgroup(self) -> set[int] | None:
        """Cgroup-aware choice: the members of the worst leaf below the root,
        or None (choose among all processes) when disabled or none is found."""
        cfg = self.settings.cgroup_choice
        if not cfg.enabled:
            return None
        stats = [LeafStat.read(self.cgroups, cg, self.procfs) for cg in self.cgroups.leaves(cfg.root)]
        leaf = choose_leaf(stats, cfg.by)
        if leaf is None:
            self.emit("warning", "cgroup_choice_empty", root=cfg.root, by=cfg.by)
            return None
        self.emit("info", "cgroup_chosen", cgroup=leaf.cgroup.path, by=cfg.by, pressure=leaf.pressure,
                  memory_kib=leaf.memory_kib, preference=leaf.preference, leaves=len(stats))
        return set(leaf.pids)

    def _scan_choice(self, top_n: int, only: set[int] | None) -> list[Candidate]:
        """scan(), or with choice.by_user the scan of the user furthest above
        an equal share of memory (the next user when that one has no
        candidate), in fair-share order (judge/fairshare.py)."""
        if not self.settings.choice.by_user:
            return self.scan(top_n, only)
        rows = [r for r in snapshot.memory_by_pid(self.procfs, snapshot.default_skip(self.procfs))
                if only is None or r[0] in only]
        shares = fairshare.user_shares((uid, kib) for _, uid, kib in rows)
        for u in shares:
            cands = self.scan(top_n, {pid for pid, uid, _ in rows if uid == u.uid})
            if cands:
                self.emit("info", "user_chosen", uid=u.uid, kib=u.kib, share_kib=u.share_kib,
                          processes=u.processes, users=[[s.uid, s.kib] for s in shares])
                return fairshare.fair_order(cands, shares)
        return self.scan(top_n, only)

    def _act(self, level: Level, reason: str) -> float:
        # The top report_top by final badness (+ the stuck ones filtered out
        # after the scan), so the kill event's table is the real runner-up
        # list.  Ties below the first place stop the scan (snapshot.scan):
        # most idle processes share oom_score 666 + adj on >= 5.9 kernels,
        # and reading every one tied with the N-th took 0.7 s at 2,000.
        top = max(1, self.settings.report_top)
        cands = self._scan_choice(top_n=top + len(self.state.stuck), only=self._choose_cgroup())
        if not cands:
            self.emit("error", "no_candidate", oom_level=level.name, reason=reason)
            return self.settings.sampling.max_interval
        victim = cands[0]
        if victim.action and victim.proc.identity not in self.state.episode.soft_done:
            self.state.episode.soft_done.add(victim.proc.identity)
            grace = victim.grace_s if victim.grace_s is not None else self.settings.kill.grace
            if self._soft_action(victim, level, reason, grace):
                return self.settings.sampling.min_interval
        plan = KillPlan(self.settings.kill.grace, self.settings.kill.kill_timeout, self.settings.dry_run)

        def on_first(sig: str, level_now: Level) -> None:
            self.state.episode.kills += 1
            self.judge.note_action(self.clock())  # PSI post-action delay starts
            self._log_kill(victim, sig, level_now, cands, reason)

        group = self._group_of(victim)
        if group is not None:
            outcome = self.group_killer.kill(victim, group[0], group[1], plan, on_first)
        else:
            outcome = self.killer.kill(victim, plan, on_first)
        return self._after(victim, outcome, plan)

    def _soft_action(self, victim: Candidate, level: Level, reason: str, grace_s: float) -> bool:
        """The victim's soft action (a policy's ``action``: act/soft.py), then
        the grace for memory to come back above TERM.  True when it did (no
        kill); False when the kill must follow: the action failed, the grace
        ended below TERM, or the KILL level was reached.  One event,
        ``soft_action``, with the outcome."""
        from ..act import soft
        from ..act.escalate import WAIT_STEP_S
        from ..act.escalate import wait_readable as _wait_readable

        p, action = victim.proc, victim.action
        assert action is not None
        base: dict[str, Any] = {"pid": p.pid, "comm": p.comm, "uid": p.uid, "cgroup": p.cgroup,
                                "rule": victim.action_rule, "action": action[0], "oom_level": level.name,
                                "reason": reason, "dry_run": self.settings.dry_run}
        if action[0] == "run":
            base["argv"] = list(action[1:])
        if self.settings.dry_run:
            self.emit("warning", "soft_action", outcome="dry_run", **base)
            return False
        opened = self.killer.open_verified(p.pid, p.start_time)
        if isinstance(opened, str):
            self.emit("info", "soft_action", outcome="skipped", error=opened, **base)
            return False
        cfg = getattr(self.settings, "soft_actions", None)  # absent from plans of older versions
        timeout = cfg.timeout if cfg is not None else 10.0
        t0 = self.clock()
        running = None
        try:
            if action[0] == "run":
                problem, fatal = program_problem(action[1])
                if fatal:
                    raise OSError(problem)
                fields = {"pid": p.pid, "comm": p.comm, "cmdline": p.cmdline, "uid": p.uid,
                          "rss_kib": p.rss_kib, "signal": "", "reason": reason, "dry_run": False}
                running = soft.run_action(action[1:], fields, timeout)
            else:
                unit, why = soft.unit_of_cgroup(p.cgroup)
                if unit is None:
                    raise OSError(f"no unit to restart: {why}")
                base["unit"] = unit
                bus = cfg.system_bus if cfg is not None else "unix:path=/run/dbus/system_bus_socket"
                base["job"] = soft.restart_unit(bus, unit)
        except (OSError, ValueError) as e:  # jeepney raises ValueError for a bad address
            os.close(opened)
            self.emit("error", "soft_action", outcome="failed", error=str(e), **base)
            return False
        self.judge.note_action(self.clock())  # PSI post-action delay starts
        deadline, exited, outcome = t0 + grace_s, False, "not recovered"
        try:
            while True:
                lv = self._resample_level()
                if lv < Level.TERM:
                    outcome = "recovered"
                    break
                if lv >= Level.KILL:
                    outcome = "KILL level reached"
                    break
                now = self.clock()
                if now >= deadline:
                    break
                if exited:
                    time.sleep(min(WAIT_STEP_S, deadline - now))
                else:
                    exited = _wait_readable(opened, min(WAIT_STEP_S, deadline - now))
        finally:
            os.close(opened)
        if running is not None:
            base["returncode"] = running.returncode()
        sev = "info" if outcome == "recovered" else "warning"
        self.emit(sev, "soft_action", outcome=outcome, ms=round((self.clock() - t0) * 1000, 1),
                  victim_exited=exited, grace_s=grace_s, mem_available_kib=self.last_sample.mem_available_kib,
                  **base)
        return outcome == "recovered"

    def _group_of(self, victim: Candidate) -> tuple[CgroupRef, str] | None:
        """(cgroup, why) when the victim's whole cgroup must go, else None."""
        cg = self.cgroups.ref(victim.proc.cgroup)
        if cg is None:
            return None
        cfg = self.settings.cgroups
        if victim.kill_cgroup:
            why = "policy kill: cgroup"
        elif any(cg.path == p or cg.path.startswith(p + "/") for p in cfg.kill_whole):
            why = "cgroups.kill_whole"
        elif cfg.oom_group and self.cgroups.oom_group(cg):
            why = "memory.oom.group=1"
        else:
            return None
        refused = self.group_killer.refuse(cg)
        if refused is not None:
            self.emit("warning", "group_kill_refused", pid=victim.proc.pid, cgroup=cg.path, why=why, reason=refused)
            return None
        return cg, why

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
            s = self.last_sample
            self.state.release = (self.clock() + self.settings.kill.release_timeout,
                                  s.mem_available_kib + s.swap_free_kib, self._expected_back(victim))
            return self.settings.kill.settle
        self.state.stuck[victim.proc.identity] = self.clock()
        self.emit("error", "victim_stuck", pid=victim.proc.pid, comm=victim.proc.comm,
                       signals=list(outcome.signals), timeout_s=plan.kill_timeout_s)
        return self.settings.sampling.min_interval

    def _expected_back(self, victim: Candidate) -> int:
        """KiB the victim's death gives back: its frees_kib (USS + swap, as
        the kill event said), or half its RSS + swap when that was not read
        (shared pages do not come back; half was the guess before psutil)."""
        p = victim.proc
        known = self.state.frees
        if known is not None and known[0] == p.identity and known[1] is not None:
            return known[1]
        return (p.rss_kib + p.swap_kib) // 2

    def _frees_fields(self, p: ProcInfo) -> dict[str, Any]:
        """``frees_kib`` and how it was read, for the kill event: from the
        read made during the approach (FreesReader) if it was this process,
        grown by what its RSS + swap grew since; else None (never read here:
        smaps_rollup walks the page tables, tens of ms, not before the signal)."""
        r = self.frees.reading(p.identity)
        frees = r.frees_now(p.rss_kib, p.swap_kib) if r is not None else None
        self.state.frees = (p.identity, frees)
        if r is None or frees is None:
            return {"frees_kib": None, "frees": None}
        f = r.facts
        return {"frees_kib": frees,
                "frees": {"uss_kib": f.uss_kib, "pss_kib": f.pss_kib, "swap_kib": f.swap_kib,
                          "rss_kib": f.rss_kib, "read_s_ago": round(self.clock() - r.at, 3), "read_ms": r.ms}}

    def _log_kill(self, victim: Candidate, sig: str, level: Level, cands: list[Candidate], reason: str) -> None:
        p = victim.proc
        dry = self.settings.dry_run
        top = [_cand_row(c) for c in cands[: self.settings.report_top]]
        fields: dict[str, Any] = dict(pid=p.pid, comm=p.comm, cmdline=p.cmdline, uid=p.uid, exe=p.exe, cgroup=p.cgroup,
            signal=sig, dry_run=dry, oom_level=level.name, oom_score=p.oom_score,
            oom_score_adj=p.oom_score_adj, badness=victim.badness, rules=list(victim.rules),
            kill_group=victim.kill_group, pgid=p.pgid,
            rss_kib=p.rss_kib, swap_kib=p.swap_kib, **self._frees_fields(p), reason=reason,
            why=" ".join(victim.reasons), episode_kills=self.state.episode.kills, candidates=top,
            growth={"points": victim.growth_points, "grew_kib": victim.growth_kib,
                    "over_s": victim.growth_over_s, "share": victim.growth_share,
                    "rate_kib_s": victim.growth_rate_kib_s, "window_s": self.settings.growth.window,
                    "weight": self.settings.growth.weight, "enabled": self.settings.growth.enabled},
        )
        self.emit("warning", "kill", **fields)
        for step in self.pre_kill:
            step(dict(fields))
        mem = None if dry else snapshot.read_kernel_mem(self.procfs, p.pid)
        if mem is not None:
            vm, anon, file, shmem = mem  # the log's killed_process_line adds the kernel-style line
            self.emit("warning", "killed_process", pid=p.pid, comm=p.comm, uid=p.uid, total_vm_kib=vm,
                      anon_rss_kib=anon, file_rss_kib=file, shmem_rss_kib=shmem)

    # -- helpers for the killer ---------------------------------------------
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


def _drain(fd: int | None) -> None:
    """Empty the signal wakeup pipe (the handlers have run or will)."""
    if fd is None:
        return
    try:
        while os.read(fd, 512):
            pass
    except OSError:  # BlockingIOError: empty
        pass


def _relief_desc(s: Settings) -> str:
    r = getattr(s, "swap_relief", None)
    if r is None or not r.enabled:
        return "off"
    return (f"at a memory level, act unless swap keeps up: MemAvailable not reaching the floor within "
            f"{r.horizon:g}s and full stall < {r.stall:g}% over {r.window:g}s")


def _thrash_desc(s: Settings) -> str:
    t = getattr(s, "thrash", None)
    if t is None or not t.enabled:
        return "off"
    return (f"full stall >= {t.stall:g}% over {t.window:g}s with swap-in >= {t.min_swapin_mib_s:g} MiB/s "
            f"or refaults >= {t.min_refault_mib_s:g} MiB/s, while MemAvailable <= warn: "
            f"term after {t.duration:g}s, kill after {2 * t.duration:g}s")


def _psi_desc(s: Settings) -> str:
    p = s.psi
    if not p.enabled:
        return "off"
    kill = f", kill > {p.kill:g}%" if p.kill is not None else ""
    return (f"{p.line} {p.avg} > {p.term:g}%{kill} for {p.duration:g}s while MemAvailable <= warn, "
            f"{p.post_action_delay:g}s after an action")


def _cand_row(c: Candidate) -> dict[str, object]:
    p = c.proc
    return {"pid": p.pid, "comm": p.comm, "badness": c.badness, "oom_score": p.oom_score,
            "oom_score_adj": p.oom_score_adj, "rss_kib": p.rss_kib, "rules": list(c.rules),
            "growth_points": c.growth_points, "growth_kib": c.growth_kib, "growth_share": c.growth_share,
            "growth_rate_kib_s": c.growth_rate_kib_s}

