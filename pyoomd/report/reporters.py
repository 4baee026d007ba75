"""The report-stage observers a ``pyoomd run`` attaches, from its settings:
hooks, notifications, metrics, the status socket, earlyoom's memory report.

Each is built only when configured, and its library imported only then
(prometheus_client, jeepney): an unused feature costs no memory.  A status
socket or metrics port that cannot be opened is logged and the daemon runs
on without it: reporting must never keep the killer from starting.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from ..model import Decision, MemSample

if TYPE_CHECKING:  # annotations only
    from ..settings.amounts import Thresholds
    from ..settings.schema import Settings


class Reported(Protocol):
    """What the report observers need of the daemon, and no more: its
    settings and levels (rebuilt on reload), its event stream and logger,
    the last tick's duration (metrics), the observer and pre-kill lists to
    join, and ``wake`` (the status socket asks for a fresh sample).  The
    status socket also shows ``policy_loaded``, ``waiter``,
    ``levels_totals`` and ``kernel_log_state`` where the daemon has them."""

    @property
    def settings(self) -> Settings: ...
    @property
    def thresholds(self) -> Thresholds: ...
    @property
    def log(self) -> Any: ...
    @property
    def last_tick_s(self) -> float | None: ...
    @property
    def observers(self) -> list[Any]: ...
    @property
    def pre_kill(self) -> list[Callable[[dict[str, Any]], None]]: ...

    def emit(self, severity: str, event: str, **fields: Any) -> None: ...

    def wake(self) -> None: ...


def attach(daemon: Reported, settings: Settings, config_files: list[str]) -> list[Callable[[], None]]:
    """Add the configured observers to ``daemon.observers`` (as one
    ``Reporters``, which rebuilds them when a reload changes their
    settings); returns stop functions."""
    if settings.raise_priority:
        from ..act.priority import raise_priority

        daemon.emit("info", "priority_raised", **raise_priority())
    reporters = Reporters(daemon, config_files)
    daemon.observers.append(reporters)
    daemon.pre_kill.append(reporters.pre_kill)
    return [reporters.stop]


# The settings each reporter is built from: a reload that changes one of
# them rebuilds that reporter (and only it: the others keep their state,
# e.g. the metrics' counters and the notifier's rate limits).
_PARTS: dict[str, Callable[[Any], Any]] = {
    "hooks": lambda s: s.hooks,
    "notify": lambda s: s.notify,
    "lowmem": lambda s: getattr(s, "low_memory_monitor", None),
    "metrics": lambda s: s.metrics,
    "status": lambda s: s.status.socket,
    "report": lambda s: s.report_interval,
}


class Reporters:
    """The report observers of a ``pyoomd run`` (hooks, notifications,
    metrics, status socket, memory report) as one observer.  On a
    ``reloaded`` event, each part whose settings changed is stopped and built
    again from the daemon's new settings: ``systemctl reload`` turns
    notifications on, moves the metrics port, changes hooks.  A part that
    cannot start is logged and left out; the killer runs on."""

    def __init__(self, daemon: Reported, config_files: list[str]) -> None:
        self.daemon = daemon
        self.config_files = config_files
        self._keys: dict[str, Any] = {}
        self._parts: dict[str, tuple[list[Any], list[Callable[[], None]]]] = {}
        self._observers: list[Any] = []
        for name in _PARTS:  # at start-up a refused part (a hook others may rewrite: ConfigError) stops us
            self._build(name, strict=True)

    @property
    def observers(self) -> list[Any]:
        return self._observers  # flattened when a part is built: on_tick runs every tick

    @property
    def idle_every_s(self) -> float | None:
        """The shortest idle period any part asks for (Daemon.idle_timeout_s)."""
        wants = [w for w in (getattr(o, "idle_every_s", None) for o in self.observers) if w is not None and w > 0]
        return min(wants) if wants else None

    def _build(self, name: str, strict: bool = False) -> None:
        self._keys[name] = _PARTS[name](self.daemon.settings)
        obs: list[Any] = []
        stops: list[Callable[[], None]] = []
        try:
            _BUILDERS[name](self.daemon, self.daemon.settings, self.config_files, obs, stops)
        except Exception as e:  # on reload: e.g. a hook made writable by others since (re-raised at start-up)
            if strict:
                raise
            self.daemon.emit("error", "reporter_failed", reporter=name, error=str(e) or repr(e))
        self._parts[name] = (obs, stops)
        self._observers = [o for part, _ in self._parts.values() for o in part]

    def on_event(self, event: str, fields: dict[str, Any]) -> None:
        for obs in self.observers:
            try:
                obs.on_event(event, fields)
            except Exception as e:  # noqa: BLE001 - an observer must never stop the loop
                self.daemon.log.error("observer_failed", observer=type(obs).__name__, error=repr(e))
        if event == "reloaded":
            self.reload()
        elif event == "levels_changed":  # swapon, hotplug: the gauges show the new levels
            for obs in self._parts["metrics"][0]:
                obs.thresholds = self.daemon.thresholds

    def pre_kill(self, fields: dict[str, Any]) -> None:
        """The act stage's pre-kill step (the hooks' pre_kill programs)."""
        for obs in self._parts["hooks"][0]:
            try:
                obs.pre_kill(fields)
            except Exception as e:  # noqa: BLE001 - a hook must never stop the kill
                self.daemon.log.error("observer_failed", observer=type(obs).__name__, error=repr(e))

    def on_tick(self, sample: MemSample, decision: Decision) -> None:
        for obs in self.observers:
            try:
                obs.on_tick(sample, decision)
            except Exception as e:  # noqa: BLE001
                self.daemon.log.error("observer_failed", observer=type(obs).__name__, error=repr(e))

    def reload(self) -> None:
        changed = [n for n, key in _PARTS.items() if key(self.daemon.settings) != self._keys[n]]
        for name in changed:
            for stop in self._parts[name][1]:
                stop()
            self._build(name)
        for obs in self._parts["metrics"][0]:  # new levels, same counters
            obs.thresholds = self.daemon.thresholds
        if changed:
            self.daemon.emit("info", "reporters_rebuilt", reporters=changed)

    def stop(self) -> None:
        for _, stops in self._parts.values():
            for stop in stops:
                stop()


def _hooks(daemon: Reported, settings: Settings, config_files: list[str], obs: list[Any],
           stops: list[Callable[[], None]]) -> None:
    if settings.hooks.pre_kill or settings.hooks.post_kill:
        from ..act.hooks import HookRunner

        h = HookRunner(settings.hooks, lambda ev, **kw: daemon.log.warning(ev, **kw))
        obs.append(h)
        stops.append(h.stop)


def _notify(daemon: Reported, settings: Settings, config_files: list[str], obs: list[Any],
            stops: list[Callable[[], None]]) -> None:
    if settings.notify.enabled:
        from .notify import Notifier

        n = Notifier(settings.notify, lambda ev, **kw: daemon.log.info(ev, **kw)).start()
        obs.append(n)
        stops.append(n.stop)


def _lowmem(daemon: Reported, settings: Settings, config_files: list[str], obs: list[Any],
            stops: list[Callable[[], None]]) -> None:
    cfg = getattr(settings, "low_memory_monitor", None)  # absent from plans of older versions
    if cfg is not None and cfg.enabled:
        from .lowmem import LowMemoryMonitor

        m = LowMemoryMonitor(cfg.system_bus, cfg.min_interval,
                             lambda sev, ev, **kw: getattr(daemon.log, sev)(ev, **kw)).start()
        obs.append(m)
        stops.append(m.stop)


def _metrics(daemon: Reported, settings: Settings, config_files: list[str], obs: list[Any],
             stops: list[Callable[[], None]]) -> None:
    if settings.metrics.listen or settings.metrics.textfile:
        from .metrics import Metrics

        try:
            m = Metrics(settings.metrics, daemon.thresholds, lambda ev, **kw: daemon.log.warning(ev, **kw),
                        last_tick_s=lambda: daemon.last_tick_s).start()
        except OSError as e:
            daemon.emit("error", "metrics_failed", listen=settings.metrics.listen, error=str(e))
            return
        obs.append(m)
        stops.append(m.stop)


def _status(daemon: Reported, settings: Settings, config_files: list[str], obs: list[Any],
            stops: list[Callable[[], None]]) -> None:
    if settings.status.socket:
        _attach_status(daemon, settings.status.socket, config_files, obs, stops)


def _report(daemon: Reported, settings: Settings, config_files: list[str], obs: list[Any],
            stops: list[Callable[[], None]]) -> None:
    if settings.report_interval > 0:
        obs.append(MemoryReport(settings.report_interval, lambda ev, **kw: daemon.log.info(ev, **kw)))


_BUILDERS = {"hooks": _hooks, "notify": _notify, "lowmem": _lowmem, "metrics": _metrics, "status": _status, "report": _report}


def _recorder_status(daemon: Any) -> dict[str, Any] | None:
    rec = getattr(daemon.settings, "recorder", None)
    if rec is None:
        return None
    on = any(type(o).__name__ == "Recorder" for o in daemon.observers)
    return {"enabled": bool(rec.enabled and on), "dir": rec.dir, "seconds": rec.seconds}


def _attach_status(daemon: Reported, path: str, config_files: list[str], observers: list[Any],
                   stops: list[Callable[[], None]]) -> None:
    from .control import StatusObserver, StatusServer

    def static() -> dict[str, Any]:
        loaded = getattr(daemon, "policy_loaded", None)
        waiter = getattr(daemon, "waiter", None)
        return {
            "config_files": config_files, "policy_files": list(loaded.loaded) if loaded else [],
            "dry_run": daemon.settings.dry_run,
            "wake_mode": getattr(waiter, "mode", None) or ("psi trigger" if waiter else "adaptive sampling"),
            "thresholds": dataclasses.asdict(daemon.thresholds),
            # what the levels were resolved against (they follow swapon, hotplug)
            "levels_for": dict(zip(("mem_total_kib", "swap_total_kib"), getattr(daemon, "levels_totals", ()))),
            "kernel_log": getattr(daemon, "kernel_log_state", None),
            "levels": {"memory": {k: str(getattr(daemon.settings.memory, k)) for k in ("warn", "term", "kill")},
                       "swap": {k: str(getattr(daemon.settings.swap, k)) for k in ("term", "kill")}},
            # the flight recorder: where traces go (`pyoomd status --dump-trace` waits there)
            "recorder": _recorder_status(daemon),
        }

    obs = StatusObserver(static, wake=getattr(daemon, "wake", None))
    try:
        server = StatusServer(path, obs).start()
    except OSError as e:
        daemon.emit("error", "status_socket_failed", socket=path, error=str(e))
        return
    observers.append(obs)
    stops.append(server.stop)


class MemoryReport:
    """earlyoom's -r: a ``memory_report`` event every ``interval`` seconds."""

    def __init__(self, interval: float, log: Callable[..., None], clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self.log = log
        self.clock = clock
        self.next_at = 0.0
        self.idle_every_s = interval  # the daemon's idle wait comes back this often

    def on_event(self, event: str, fields: dict[str, Any]) -> None:
        pass

    def on_tick(self, sample: MemSample, decision: Decision) -> None:
        now = self.clock()
        if now < self.next_at:
            return
        self.next_at = now + self.interval
        self.log("memory_report", oom_level=decision.level.name, mem_available_kib=sample.mem_available_kib,
                 mem_available_pct=round(sample.mem_available_pct, 2), mem_total_kib=sample.mem_total_kib,
                 swap_free_kib=sample.swap_free_kib, swap_free_pct=round(sample.swap_free_pct, 2),
                 swap_total_kib=sample.swap_total_kib)
