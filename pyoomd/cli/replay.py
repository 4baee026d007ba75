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

Here: the recorded inputs and ``run``; the clock, the deaths and the kill
model are in cli/replay_model.py, what a replay says in cli/replay_report.py.
"""

from __future__ import annotations

import bisect
import errno
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..model import Level, MemSample, Pressure, PsiLine
from ..sense.procfs import Procfs
from ..trace import Trace
from .replay_model import Deaths, LiveKill, SimClock, SimGroupKiller, SimKiller, live_kills


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
