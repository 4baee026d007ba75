"""The replay's simulated world (cli/replay.py has the whole story): its
clock, who died when, and the kill model (``SimKiller``: no signal is sent;
the victim exits as it did live, or after ``MODEL_EXIT_S``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..model import Candidate, KillOutcome, Level
from ..sense import parse
from ..sense.procfs import Procfs
from ..trace import Trace

# A victim the live daemon did not kill exits this long after its first
# signal, unless the trace has a live victim's time to exit: the
# benchmark's crossing->death latency of a hog that exits on SIGTERM is
# ~50 ms here (README, Benchmarks: steady 48 ms).
MODEL_EXIT_S = 0.05


class SimClock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@dataclass
class Deaths:
    """Who died when, live and in the replay: pid -> (exit time, RSS+swap KiB)."""

    live: dict[int, tuple[float, int]] = field(default_factory=dict)
    replay: dict[int, tuple[float, int]] = field(default_factory=dict)

    def gone(self, pid: int, t: float) -> bool:
        """Gone in the replay at ``t``."""
        d = self.replay.get(pid)
        return d is not None and t >= d[0]

    def revived(self, pid: int, t: float) -> bool:
        """Dead live at ``t`` but alive in the replay."""
        d = self.live.get(pid)
        return d is not None and t >= d[0] and not self.gone(pid, t)

    def delta_kib(self, t: float) -> int:
        out = 0
        for pid, (te, kib) in self.replay.items():
            if t >= te and not (pid in self.live and t >= self.live[pid][0]):
                out += kib
        for pid, (te, kib) in self.live.items():
            if t >= te and not self.gone(pid, t):
                out -= kib
        return out


@dataclass
class LiveKill:
    """A kill the live daemon made, from the trace's events."""

    t: float
    pid: int
    comm: str
    signal: str
    kib: int
    fields: dict[str, Any]
    exit_t: float | None = None
    signals: tuple[str, ...] = ()


def live_kills(trace: Trace) -> list[LiveKill]:
    out: list[LiveKill] = []
    for t, ev, f in trace.events():
        if ev == "kill":
            out.append(LiveKill(t, f["pid"], f.get("comm", ""), f.get("signal", ""),
                                int(f.get("rss_kib", 0)) + int(f.get("swap_kib", 0)), f))
        elif ev == "victim_exited":
            for k in reversed(out):
                if k.pid == f.get("pid") and k.exit_t is None:
                    k.exit_t, k.signals = t, tuple(f.get("signals", ()))
                    break
    return out


class SimKiller:
    """Killer's decisions without signals (act/kill.py): re-check the
    victim's identity and the level, then the recorded or modelled fate."""

    def __init__(self, procfs: Procfs, resample: Callable[[], Level], clock: SimClock,
                 deaths: Deaths, live: list[LiveKill], guard: Any = None,
                 events: Callable[..., None] | None = None) -> None:
        self.procfs, self.resample, self.clock, self.deaths = procfs, resample, clock, deaths
        self.guard, self.events = guard, events  # the daemon's last look before a signal (act/kill.py)
        self.live = {k.pid: k for k in live}
        done = [k.exit_t - k.t for k in live if k.exit_t is not None]
        self.model_exit_s = min(done) if done else MODEL_EXIT_S

    def open_verified(self, pid: int, start_time: int) -> int | str:
        try:
            st = parse.parse_stat(self.procfs.read_pid(pid, "stat", 4096))
        except (OSError, ValueError):
            return "gone before the signal"
        return 0 if st.start_time == start_time else "pid reused by another process"

    def kill(self, victim: Candidate, plan: Any, on_first: Callable[[str, Level], None] | None = None,
             ) -> KillOutcome:
        proc = victim.proc
        opened = self.open_verified(proc.pid, proc.start_time)
        if isinstance(opened, str):
            return KillOutcome(proc.pid, proc.comm, skipped=opened, dry_run=plan.dry_run)
        level = self.resample()
        if level < Level.TERM:
            return KillOutcome(proc.pid, proc.comm, skipped="memory recovered", dry_run=plan.dry_run)
        first = "SIGKILL" if level >= Level.KILL or victim.signal == "SIGKILL" else "SIGTERM"
        why = self.guard.recheck(proc.pid, proc.start_time)[1] if self.guard is not None else None
        if why == "gone":
            return KillOutcome(proc.pid, proc.comm, skipped="gone before the signal", dry_run=plan.dry_run)
        if why is not None:
            if self.events is not None:
                self.events("kill_spared", pid=proc.pid, comm=proc.comm, signal=first, reason=why)
            return KillOutcome(proc.pid, proc.comm, skipped=f"spared before {first}: {why}", dry_run=plan.dry_run)
        if on_first is not None:
            on_first(first, level)
        if plan.dry_run:
            return KillOutcome(proc.pid, proc.comm, signals=(first,), dry_run=True, extra={"level": level.name})
        t0 = self.clock()
        lk = self.live.get(proc.pid)
        if lk is not None and lk.exit_t is not None:
            after, signals, how = lk.exit_t - lk.t, lk.signals or (first,), "as recorded"
        else:
            after, signals, how = self.model_exit_s, (first,), "model"
        self.clock.t = t0 + after
        self.deaths.replay[proc.pid] = (self.clock.t, proc.rss_kib + proc.swap_kib)
        return KillOutcome(proc.pid, proc.comm, signals=tuple(signals), exited=True,
                           ms_to_exit=round(after * 1000, 1), extra={"fate": how})


class SimGroupKiller:
    """Group kills replayed as the victim's own kill (only its memory returns)."""

    def __init__(self, single: SimKiller) -> None:
        self.single = single

    def refuse(self, cg: Any) -> str | None:
        return None

    def kill(self, victim: Candidate, cg: Any, why: str, plan: Any,
             on_first: Callable[[str, Level], None] | None = None) -> KillOutcome:
        return self.single.kill(victim, plan, on_first)
