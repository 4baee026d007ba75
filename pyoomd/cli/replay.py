"""Replay: the daemon's own code driven by a recorded trace.

The same ``Daemon`` (judge, growth, lazy scan, policies, cgroup choice,
kill decisions) runs with recorded inputs at its seams:

- ``ReplaySampler``: the recorded samples, on a simulated clock;
- ``ReplayProcfs``: every file, listing, link, xattr as recorded;
- ``SimKiller`` / ``SimGroupKiller``: no signal is sent; the outcome is
  the recorded one or the model's (below).

Time.  Ticks land on recorded samples: after a tick that asks to sleep
``pause``, the clock moves to the first recorded sample at or after
now + pause (the replay cannot sample more finely than the live daemon
did).  Each read moves the clock on by the mean time between two
back-to-back reads of the trace, so a scan takes as long as it did live.
A file is answered by its recording nearest to the clock, before or
after it (the live tick read the process table a few ms after its
sample, the replay reads it at the sample's time; the look before may be
a second old); a file never read live does not exist.  ``/proc/uptime`` runs on with the clock.

The kill model.  A victim the live daemon also killed exits as it did
live: after the same time and signals.  Any other victim exits
``MODEL_EXIT_S`` after its first signal (or after the live victim's time
to exit, when the trace has one), and from its exit on its RSS+swap (as
the scan read it) is added to every later MemAvailable (at most MemTotal)
and its /proc entries are gone.  A process the live daemon killed but the
replay did not stays alive as last recorded, and its RSS+swap at the kill
is taken out of MemAvailable again from its live exit on.  Nothing else is
modelled: processes do not grow past what was recorded, a group kill frees
only the victim's own memory, and at the OK level the trace holds only the
samples the live idle wait returned (levels above the live WARN level are
seen late).
"""

from __future__ import annotations

import bisect
import errno
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..model import Candidate, KillOutcome, Level, MemSample, Pressure, PsiLine
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


class Store:
    """Recorded answers by (kind, key): sorted times and values."""

    def __init__(self, entries: list[tuple[Any, ...]]) -> None:
        series: dict[tuple[str, str], tuple[list[float], list[Any]]] = {}
        self.samples: list[tuple[float, MemSample]] = []
        self.vmstat: tuple[list[float], list[Any]] = ([], [])
        psi: Pressure | None = None
        for e in entries:
            kind, t = e[0], e[1]
            if kind == "s":
                if e[7] != 0:
                    psi = _pressure(e[7])
                self.samples.append((t, MemSample(e[2], e[3], e[4], e[5], psi, bool(e[6]))))
            elif kind == "v":
                self.vmstat[0].append(t)
                self.vmstat[1].append(e[2])
            elif kind == "a":
                s = series.setdefault(("a", f"{e[2]}\0{e[3]}"), ([], []))
                s[0].append(t)
                s[1].append(e[4])
            elif kind in "rlkcdxu":
                s = series.setdefault((kind, e[2]), ([], []))
                s[0].append(t)
                s[1].append(e[3])
        self.series = series
        self.sample_times = [t for t, _ in self.samples]
        self.read_cost_s = _read_cost(entries)

    def at(self, kind: str, key: str, t: float, ok: Callable[[Any], bool] | None = None) -> Any:
        """The value nearest to ``t`` (see the module docstring), or None if never recorded.
        ``ok``: the last value that passes it (a process kept alive)."""
        s = self.series.get((kind, key))
        if s is None:
            return None
        times = s[0]
        i = bisect.bisect_right(times, t) - 1
        if i < 0 or (i + 1 < len(times) and times[i + 1] - t < t - times[i]):
            i += 1  # the nearer one is after: a look the live daemon made a moment later
        if ok is not None:
            while i > 0 and not ok(s[1][i]):
                i -= 1
        return s[1][i]

    def sample_at(self, t: float) -> MemSample:
        i = max(0, bisect.bisect_right(self.sample_times, t) - 1)
        return self.samples[i][1]


# Reads closer than this belong to one scan (a scan reads back to back).
SCAN_GAP_S = 0.001


def _read_cost(entries: list[tuple[Any, ...]]) -> float:
    """The mean time between two back-to-back recorded reads (the read and
    the Python work around it): what one read costs the replay's clock, so
    a replayed scan takes about as long as the live one did (0 when the
    trace has no scan)."""
    gaps = []
    prev = None
    for e in entries:
        if e[0] in "rlk":
            if prev is not None and 0 <= e[1] - prev < SCAN_GAP_S:
                gaps.append(e[1] - prev)
            prev = e[1]
    if not gaps:
        return 0.0
    return float(sum(gaps)) / len(gaps)


def _pressure(p: Any) -> Pressure | None:
    if p is None:
        return None
    full = PsiLine(*p[4]) if p[4] is not None else None
    return Pressure(PsiLine(p[0], p[1], p[2], p[3]), full)


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


class ReplaySampler:
    backend = "replay"

    def __init__(self, store: Store, clock: SimClock, deaths: Deaths) -> None:
        self.store, self.clock, self.deaths = store, clock, deaths
        self.has_psi = any(s.psi is not None for _, s in store.samples[:1])
        self.read_times: list[float] = []

    def read(self) -> MemSample:
        t = self.clock()
        self.read_times.append(t)
        s = self.store.sample_at(t)
        d = self.deaths.delta_kib(t)
        if d:
            s = s._replace(mem_available_kib=max(0, min(s.mem_total_kib, s.mem_available_kib + d)))
        return s

    def close(self) -> None:
        pass


class ReplayVmstat:
    def __init__(self, store: Store, clock: SimClock) -> None:
        self.store, self.clock = store, clock

    def read(self) -> Any:
        times, vals = self.store.vmstat
        if not times:
            return None
        from ..sense.vmstat import VmCounters

        v = vals[max(0, bisect.bisect_right(times, self.clock()) - 1)]
        return VmCounters(*v) if v is not None else None

    def close(self) -> None:
        pass


def _not_errno(v: Any) -> bool:
    return not isinstance(v, int) or isinstance(v, bool)


def _missing(path: str) -> OSError:
    return FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), path)


class ReplayProcfs(Procfs):
    """Answers from the trace at the simulated clock (see the module docstring)."""

    def __init__(self, store: Store, clock: SimClock, deaths: Deaths, header: dict[str, Any]) -> None:
        super().__init__(header.get("procfs", "/proc"))
        self.store, self.clock, self.deaths = store, clock, deaths
        self.recorded_skip = set(header.get("skip", ())) - {1}
        self._self = int(header.get("pid", 0)) or None
        self._prefix = self.root.rstrip("/") + "/"

    def _pid_of(self, path: str) -> int | None:
        if not path.startswith(self._prefix):
            return None
        seg = path[len(self._prefix):].split("/", 1)[0]
        return int(seg) if seg.isdigit() else None

    def _get(self, kind: str, path: str) -> Any:
        clock = self.clock
        clock.t += self.store.read_cost_s
        t = clock.t
        d = self.deaths
        ok = None
        if d.live or d.replay:  # only then can a pid be gone or kept alive
            pid = self._pid_of(path)
            if pid is not None:
                if d.gone(pid, t):
                    raise _missing(path)
                if d.revived(pid, t):
                    ok = _not_errno
        v = self.store.at(kind, path, t, ok)
        if v is None:
            raise _missing(path)
        if isinstance(v, int) and not isinstance(v, bool):
            raise OSError(v, os.strerror(v), path)
        return v

    def read(self, path: str, limit: int = 1 << 20) -> bytes:
        if path == self.uptime:
            return self._uptime()
        return bytes(self._get("r", path)[:limit])

    def _uptime(self) -> bytes:
        s = self.store.series.get(("r", self.uptime))
        if s is None:
            raise _missing(self.uptime)
        t = self.clock()
        i = max(0, bisect.bisect_right(s[0], t) - 1)
        v = s[1][i]
        if isinstance(v, int):
            raise OSError(v, os.strerror(v), self.uptime)
        up = float(v.split()[0]) + (t - s[0][i])
        return f"{up:.2f} 0.00\n".encode()

    def pids(self) -> list[int]:
        self.clock.t += self.store.read_cost_s
        t = self.clock()
        listed = self.store.at("l", self.root, t)
        if listed is None or isinstance(listed, int):
            raise _missing(self.root)
        d = self.deaths
        skip = self.recorded_skip
        if not (d.live or d.replay):
            return [p for p in listed if p not in skip]
        out = [p for p in listed if p not in skip and not d.gone(p, t)]
        have = set(out)
        out += [p for p in d.live if p not in have and d.revived(p, t)]
        return out

    def tids(self, pid: int) -> list[int]:
        return list(self._get("l", self.pid_file(pid, "task")))

    def readlink_pid(self, pid: int, name: str) -> str:
        return str(self._get("k", self.pid_file(pid, name)))

    @property
    def self_pid(self) -> int:
        return self._self if self._self is not None else -1

    def cgroup_children(self, cgroup_dir: str) -> list[str]:
        return list(self._get("c", cgroup_dir))

    def isdir(self, path: str) -> bool:
        v = self.store.at("d", path, self.clock())
        return bool(v)

    def exists(self, path: str) -> bool:
        return bool(self.store.at("x", path, self.clock()))

    def owner_uid(self, path: str) -> int:
        v = self.store.at("u", path, self.clock())
        if v is None:
            raise _missing(path)
        if v < 0:
            raise OSError(-v, os.strerror(-v), path)
        return int(v)

    def getxattr(self, path: str, name: str) -> bytes:
        v = self.store.at("a", f"{path}\0{name}", self.clock())
        if v is None:
            raise OSError(errno.ENODATA, os.strerror(errno.ENODATA), path)
        if isinstance(v, int):
            raise OSError(v, os.strerror(v), path)
        return bytes(v)


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

    def __init__(self, procfs: ReplayProcfs, resample: Callable[[], Level], clock: SimClock,
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


class ReplayLog:
    """The daemon's log: events kept with the simulated time."""

    def __init__(self, clock: SimClock) -> None:
        self.clock = clock
        self.events: list[tuple[float, str, str, dict[str, Any]]] = []

    def _add(self, severity: str, event: str, **fields: Any) -> None:
        self.events.append((self.clock(), severity, event, fields))

    def info(self, event: str, **fields: Any) -> None:
        self._add("info", event, **fields)

    def warning(self, event: str, **fields: Any) -> None:
        self._add("warning", event, **fields)

    def error(self, event: str, **fields: Any) -> None:
        self._add("error", event, **fields)

    def debug(self, event: str, **fields: Any) -> None:
        self._add("debug", event, **fields)


class _Levels:
    """Observer: the level changes (the replay's timeline)."""

    def __init__(self, clock: SimClock) -> None:
        self.clock = clock
        self.level: Level | None = None
        self.changes: list[tuple[float, str, str, int]] = []
        self.ticks = 0

    def on_event(self, event: str, fields: dict[str, Any]) -> None:
        pass

    def on_tick(self, sample: MemSample, decision: Any) -> None:
        self.ticks += 1
        if decision.level != self.level:
            self.level = decision.level
            self.changes.append((self.clock(), decision.level.name, decision.reason, sample.mem_available_kib))


@dataclass
class Result:
    events: list[tuple[float, str, str, dict[str, Any]]]
    levels: list[tuple[float, str, str, int]]
    ticks: int
    kills: list[tuple[float, dict[str, Any]]]
    sample_times: list[float] = field(default_factory=list)
    spared: list[dict[str, Any]] = field(default_factory=list)  # live victims the replay left alive


def run(trace: Trace, settings: Any, loaded: Any) -> Result:
    """Drive a Daemon over the trace with ``settings`` and ``loaded`` policies."""
    from ..daemon import Daemon

    store = Store(trace.entries)
    if not store.samples:
        raise ValueError(f"{trace.path}: the trace holds no memory sample")
    clock = SimClock(store.sample_times[0])
    deaths = Deaths()
    live = live_kills(trace)
    for k in live:
        if k.exit_t is not None:
            deaths.live[k.pid] = (k.exit_t, k.kib)
    procfs = ReplayProcfs(store, clock, deaths, trace.header)
    log = ReplayLog(clock)
    sampler = ReplaySampler(store, clock, deaths)
    daemon = Daemon(settings, procfs, sampler, log, clock=clock,  # type: ignore[arg-type]  # the Sampler's face
                    sleep=lambda s: None)
    if loaded is not None:
        daemon.use_policies(loaded)
    daemon.vmstat = ReplayVmstat(store, clock)  # type: ignore[assignment]  # Vmstat's face
    single = SimKiller(procfs, daemon._resample_level, clock, deaths, live, getattr(daemon, "guard", None),
                       daemon._killer_event)
    daemon.killer = single  # type: ignore[assignment]
    daemon.group_killer = SimGroupKiller(single)  # type: ignore[assignment]
    levels = _Levels(clock)
    daemon.observers.append(levels)
    times = store.sample_times
    end = times[-1]
    while clock.t <= end:
        pause = daemon.tick()
        i = bisect.bisect_left(times, clock.t + max(pause, 1e-6) - 1e-9)
        if i >= len(times):
            break
        clock.t = max(clock.t, times[i])
    kills = [(t, f) for t, _, ev, f in log.events if ev == "kill"]
    spared = _spared(live, {f["pid"] for _, f in kills}, procfs, clock, daemon.policy)
    return Result(log.events, levels.changes, levels.ticks, kills, sampler.read_times, spared)


def _spared(live: list[LiveKill], killed: set[int], procfs: ReplayProcfs, clock: SimClock,
            policy: Any) -> list[dict[str, Any]]:
    """The live victims the replay did not kill, and what its policy says of
    each (as the process was read at its live kill): the rules it matches,
    the protecting one."""
    from ..sense.snapshot import read_proc

    out = []
    for k in live:
        if k.pid in killed:
            continue
        clock.t = k.t
        info = read_proc(procfs, k.pid)
        verdict = policy.evaluate(info) if info is not None else None
        out.append({"pid": k.pid, "comm": k.comm, "t": k.t,
                    "rules": list(verdict.rules) if verdict is not None else [],
                    "protected_by": verdict.protect_rule if verdict is not None else None,
                    "adjust": verdict.adjust if verdict is not None else 0})
    return out


# -- what the replay says (pyoomd replay) ------------------------------------------------
def _rel(t: float, t0: float) -> float:
    return round(t - t0, 4)


def _kill_rows(events: list[tuple[float, str, dict[str, Any]]], t0: float,
               sample_times: list[float] | None = None,
               levels: list[tuple[float, str]] | None = None) -> list[dict[str, Any]]:
    """Kills with their crossing and fate.  The crossing is the sample the
    level went to TERM (or KILL) on, the kill the sample the killer took
    just before the signal (both live and in the replay: the live event
    times also include the log's writing, the replay's do not)."""
    times = sample_times or []
    rows: list[dict[str, Any]] = []
    crossing: float | None = None
    changes = sorted(levels or [])
    prev_level = "OK"
    ci = 0
    for t, ev, f in events:
        while ci < len(changes) and changes[ci][0] <= t:
            lt, lv = changes[ci]
            if lv in ("TERM", "KILL") and prev_level not in ("TERM", "KILL"):
                crossing = _sample_before(times, lt)
            prev_level, ci = lv, ci + 1
        if ev == "kill":
            at = _sample_before(times, t) if times else t
            rows.append({"t": _rel(t, t0), "pid": f.get("pid"), "comm": f.get("comm"), "signal": f.get("signal"),
                         "badness": f.get("badness"), "rules": f.get("rules", []),
                         "oom_level": f.get("oom_level"), "candidates": f.get("candidates", []),
                         "crossing_t": _rel(crossing, t0) if crossing is not None else None,
                         "crossing_to_kill_ms": round((at - crossing) * 1000, 1) if crossing is not None else None})
        elif ev in ("victim_exited", "victim_stuck", "kill_skipped"):
            for r in reversed(rows):
                if r["pid"] == f.get("pid") and "fate" not in r:
                    r["fate"], r["fate_t"] = ev, _rel(t, t0)
                    r["exit_ms"] = f.get("ms")
                    break
    return rows


def _sample_before(times: list[float], t: float) -> float:
    i = bisect.bisect_right(times, t + 1e-9) - 1
    return times[i] if i >= 0 else t


def live_rows(trace: Trace) -> list[dict[str, Any]]:
    """The live daemon's kills (see _kill_rows)."""
    times = [e[1] for e in trace.entries if e[0] == "s"]
    levels = [(e[1], e[2]) for e in trace.entries if e[0] == "L"]
    return _kill_rows(trace.events(), trace.t0, times, levels)


def replay_rows(trace: Trace, res: Result) -> list[dict[str, Any]]:
    return _kill_rows([(t, ev, f) for t, _, ev, f in res.events], trace.t0, res.sample_times,
                      [(t, lv) for t, lv, _, _ in res.levels])


def live_levels(trace: Trace, t0: float) -> list[dict[str, Any]]:
    return [{"t": _rel(e[1], t0), "level": e[2], "reason": e[3]} for e in trace.entries if e[0] == "L"]


def report(trace: Trace, res: Result, label: str) -> dict[str, Any]:
    t0 = trace.t0
    return {
        "label": label,
        "ticks": res.ticks,
        "levels": [{"t": _rel(t, t0), "level": lv, "reason": why, "mem_available_kib": kib}
                   for t, lv, why, kib in res.levels],
        "kills": replay_rows(trace, res),
        "spared": [dict(x, t=_rel(x["t"], t0)) for x in res.spared],
        "events": [{"t": _rel(t, t0), "event": ev, **{k: v for k, v in f.items() if k != "candidates"}}
                   for t, _, ev, f in res.events if ev not in ("kill",)],
    }


def differences(ref: list[dict[str, Any]], new: list[dict[str, Any]], ref_name: str) -> list[str]:
    """How the victims in ``new`` differ from ``ref`` (who, in which order)."""
    a = [(k["pid"], k["comm"]) for k in ref]
    b = [(k["pid"], k["comm"]) for k in new]
    return [] if a == b else [f"victims: {ref_name} {_names(a)}; replay {_names(b)}"]


def timing(ref: list[dict[str, Any]], new: list[dict[str, Any]]) -> list[str]:
    """Kill by kill, when (for the kills of the same process in both)."""
    out = []
    for i, (x, y) in enumerate(zip(ref, new)):
        if (x["pid"], x["comm"]) != (y["pid"], y["comm"]):
            break
        out.append(f"kill {i + 1} {safe(y['comm'])} (pid {y['pid']}): at {y['t']:.3f}s ({(y['t'] - x['t']) * 1000:+.1f} ms), "
                   f"crossing->kill {y['crossing_to_kill_ms']} ms ({x['crossing_to_kill_ms']} ms)")
    return out


def _names(k: list[tuple[int, str]]) -> str:
    return ", ".join(f"{safe(c)} (pid {p})" for p, c in k) if k else "none"


# Names are chosen by whoever started the process: at most this many
# characters reach the terminal, escaped as rank/explain/watch do.
NAME_MAX = 64


def safe(text: Any) -> str:
    """A process name for a terminal: bounded, escaped (pyoomd.textsafe)."""
    from ..textsafe import cell

    return cell(str(text)[:NAME_MAX])


def format_report(doc: dict[str, Any]) -> str:
    tr = doc["trace"]
    lines = [(f"trace {tr['path']}: pyoomd {tr['pyoomd']}, format {tr['format']}, recorded {tr['created']}, "
              f"{tr['seconds']:.1f} s, {tr['samples']} samples, reason {tr['reason']}")]
    for run_ in doc["runs"]:
        lines.append("")
        lines.append(f"replay with {run_['label']}: {run_['ticks']} ticks in {run_['wall_s'] * 1000:.0f} ms")
        lines += _timeline(run_)
    lines.append("")
    lines.append("live daemon (as recorded):")
    for k in doc["live"]["kills"]:
        lines.append(f"  {k['t']:9.3f}s  kill {safe(k['comm'])} (pid {k['pid']}) {k['signal']} badness {k['badness']}"
                     + (f", {k['fate']} at {k['fate_t']:.3f}s" if "fate" in k else ""))
    if not doc["live"]["kills"]:
        lines.append("  no kill")
    for run_ in doc["runs"]:
        diff = run_["differences"]
        lines.append("")
        if diff:
            lines.append(f"{run_['label']}: differs from {run_['compared_to']}:")
            lines += [f"  {d}" for d in diff]
        else:
            lines.append(f"{run_['label']}: the same victims in the same order as {run_['compared_to']}")
        for x in run_.get("spared", []):
            why = (f"protected by rule {x['protected_by']}" if x["protected_by"] else
                   f"rules: {', '.join(x['rules'])}, adjust {x['adjust']:+d}" if x["rules"] else "no policy rule matches it; it ranked lower")
            lines.append(f"  {safe(x['comm'])} (pid {x['pid']}), killed live at {x['t']:.3f}s, left alive: {why}")
        if run_["timing"]:
            lines.append("  when (theirs in brackets):")
            lines += [f"    {t}" for t in run_["timing"]]
    return "\n".join(lines)


def _timeline(run_: dict[str, Any]) -> list[str]:
    rows: list[tuple[float, list[str]]] = []
    for lv in run_["levels"]:
        rows.append((lv["t"], [(f"level {lv['level']:<4}  MemAvailable {lv['mem_available_kib'] / 1048576:.2f} GiB"
                                f"  ({lv['reason']})")]))
    for k in run_["kills"]:
        out = [f"kill {safe(k['comm'])} (pid {k['pid']}) {k['signal']} at {k['oom_level']}, badness {k['badness']}, "
               f"rules: {', '.join(k['rules']) or '-'}"
               + (f", {k['crossing_to_kill_ms']} ms after the crossing" if k.get("crossing_to_kill_ms") is not None
                  else "")]
        out.append("    badness  oom_score   adj   RSS MiB  growth  rules  comm (pid)")
        for c in k["candidates"]:
            out.append(f"    {int(c['badness']):7d}  {int(c['oom_score']):9d}  {int(c['oom_score_adj']):4d}  "
                       f"{c['rss_kib'] / 1024:8.0f}  {int(c.get('growth_points') or 0):+6d}  "
                       f"{','.join(c.get('rules', [])) or '-':<5}  {safe(c['comm'])} ({c['pid']})")
        if "fate" in k:
            out.append(f"    {k['fate']} at {k['fate_t']:.3f}s" + (f" after {k['exit_ms']} ms" if k.get("exit_ms") else ""))
        rows.append((k["t"], out))
    for ev in run_["events"]:
        if ev["event"] in ("no_candidate", "cgroup_chosen", "user_chosen", "group_kill_refused"):
            rows.append((ev["t"], [f"{ev['event']} " + ", ".join(f"{a}={b}" for a, b in ev.items()
                                                                 if a not in ("t", "event"))]))
    rows.sort(key=lambda r: r[0])
    lines = []
    for t, out in rows:
        lines.append(f"  {t:9.3f}s  {out[0]}")
        lines += [f"             {x}" for x in out[1:]]
    return lines or ["  nothing happened"]
