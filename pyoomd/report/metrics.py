"""Prometheus metrics with prometheus_client: an HTTP endpoint or a
node_exporter textfile.

prometheus_client is imported only when metrics are enabled (``Metrics`` is
built): a daemon that does not export them does not pay its ~3 MiB.

Per-tick cost: the loop only stores the latest sample and level (two
attribute writes) and observes the tick duration in a histogram (~1 us);
the gauges are computed from the stored sample when scraped.  The HTTP
server (one thread, bounded: report/httpserve.py) and the textfile writer
run in their own threads.
"""

from __future__ import annotations

import os
import stat
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from ..model import Decision, Level, MemSample
from ..settings.amounts import Thresholds

if TYPE_CHECKING:  # annotations only
    from ..settings.schema import MetricsConfig

# Tick durations: a tick is ~10-50 us (sample + judge); a tick that acts
# includes the scan and the wait for the victim (up to the grace, seconds).
TICK_BUCKETS = (1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 1e-2, 0.1, 1.0, 10.0)


def reason_label(fields: dict[str, Any]) -> str:
    """A bounded label for why a kill happened (the logged reason is free
    text with numbers in it): ``memory_term``, ``memory_kill``, ``psi_kill``..."""
    cause = "psi" if "psi" in str(fields.get("reason", "")).lower() else "memory"
    return f"{cause}_{str(fields.get('oom_level', 'term')).lower()}"


def textfile_dir_problem(path: str, euid: int | None = None) -> str | None:
    """Why the textfile's directory must not be written to, or None.  One
    that another user can write (without the sticky bit) or that another
    user owns lets them plant names there; the file is written through a
    fresh O_EXCL temporary name anyway (never followed), but a directory
    someone else controls can still swap what node_exporter reads."""
    euid = os.geteuid() if euid is None else euid
    d = os.path.dirname(os.path.abspath(path))
    try:
        st = os.stat(d)
    except OSError as e:
        return f"directory {d}: {e.strerror}"
    if not stat.S_ISDIR(st.st_mode):
        return f"{d} is not a directory"
    if st.st_uid not in (0, euid):
        return f"directory {d} is owned by uid {st.st_uid}, neither root nor pyoomd's uid {euid}"
    if st.st_mode & 0o022 and not st.st_mode & stat.S_ISVTX:
        return (f"directory {d} is writable by group or others without the sticky bit "
                f"(mode {stat.S_IMODE(st.st_mode):04o}): chmod go-w or +t")
    return None


def write_textfile(path: str, data: bytes) -> None:
    """``data`` to ``path`` atomically: a temporary file of a random name in
    the same directory, created with O_EXCL (mkstemp: a planted symlink or
    file is never followed or reused), 0644, then renamed over ``path``
    (which replaces a symlink there rather than following it)."""
    d, base = os.path.split(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=d, prefix=f".{base}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            os.fchmod(f.fileno(), 0o644)  # node_exporter runs as its own user
        os.rename(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def parse_listen(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    return host.strip("[]"), int(port)


class Metrics:
    """An observer that exports the daemon's state."""

    def __init__(self, cfg: MetricsConfig, thresholds: Thresholds, log: Callable[..., None],
                 last_tick_s: Callable[[], float | None] = lambda: None) -> None:
        from prometheus_client import (
            CollectorRegistry,
            Counter,
            Gauge,
            Histogram,
            ProcessCollector,
            disable_created_metrics,
        )

        disable_created_metrics()  # *_created series double the output and say nothing useful here

        self.cfg = cfg
        self.log = log
        self.thresholds = thresholds
        # The daemon's idle wait comes back at least this often: the gauges'
        # sample is at most this old while memory is plentiful.
        self.idle_every_s = 10.0
        self.last_tick_s = last_tick_s
        self.sample: MemSample | None = None
        self.level = Level.OK
        self.last_victim: dict[str, str] | None = None
        self.last_kill_time: float | None = None
        self.registry = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=self.registry)  # our own RSS, CPU, fds
        self.kills = Counter("pyoomd_kills", "Processes signalled, by reason and first signal",
                             ["reason", "signal"], registry=self.registry)
        self.dry_kills = Counter("pyoomd_dry_run_kills", "Kills chosen but not sent (dry-run), by reason",
                                 ["reason"], registry=self.registry)
        self.escalations = Counter("pyoomd_escalations", "SIGTERMs followed by SIGKILL", registry=self.registry)
        self.stuck = Counter("pyoomd_victims_stuck", "Victims still alive after SIGKILL and the timeout",
                             registry=self.registry)
        # outcome: recovered (no kill), not recovered, KILL level reached, failed, skipped, dry_run
        self.soft = Counter("pyoomd_soft_actions", "Policies' soft actions (run, restart-unit) tried, by outcome",
                            ["action", "outcome"], registry=self.registry)
        # The kernel OOM killer's own kills (sense/kmsg.py), global or a memory cgroup's.
        self.kernel_kills = Counter("pyoomd_kernel_oom_kills", "Processes the kernel's OOM killer killed, "
                                    "by kind (global: pyoomd did not prevent it; memcg: a cgroup's limit)",
                                    ["kind"], registry=self.registry)
        for kind in ("global", "memcg"):
            self.kernel_kills.labels(kind)  # both series exist from the start, at 0
        self.ticks = Histogram("pyoomd_tick_duration_seconds", "Duration of one sample-judge(-act) tick",
                               buckets=TICK_BUCKETS, registry=self.registry)
        # Kills per pressure episode (TERM until OK again): 1 is the goal; more
        # means bystanders went first (see the growth term, judge/growth.py).
        self.episodes = Histogram("pyoomd_episode_kills", "Kills one pressure episode took, when it ended",
                                  buckets=(0, 1, 2, 3, 5, 10), registry=self.registry)
        self.episode_kills = Gauge("pyoomd_current_episode_kills", "Kills in the episode under way (0: none)",
                                   registry=self.registry)
        self.registry.register(_StateCollector(self))
        self.server: Any = None
        self.port: int | None = None
        self._wake = threading.Event()
        self._stopped = False

    # -- outputs ------------------------------------------------------------
    def start(self) -> Metrics:
        if self.cfg.listen:
            from .httpserve import BoundedHTTPServer, prometheus_render

            host, port = parse_listen(self.cfg.listen)  # one thread, bounded (not a thread per client)
            self.server = BoundedHTTPServer(host, port, prometheus_render(self.registry), self.log).start()
            self.port = self.server.server_port
        if self.cfg.textfile:
            problem = textfile_dir_problem(self.cfg.textfile)
            if problem:  # the endpoint (if any) still serves; the daemon runs on
                self.log("metrics_textfile_refused", path=self.cfg.textfile, error=problem)
                return self
            threading.Thread(target=self._textfile_loop, name="pyoomd-metrics-textfile", daemon=True).start()
        return self

    def write_textfile(self) -> None:
        from prometheus_client import generate_latest

        assert self.cfg.textfile
        problem = textfile_dir_problem(self.cfg.textfile)  # again each time: it may have changed
        if problem:
            self.log("metrics_textfile_failed", path=self.cfg.textfile, error=problem)
            return
        try:
            write_textfile(self.cfg.textfile, generate_latest(self.registry))  # temp + rename: never half-read
        except OSError as e:
            self.log("metrics_textfile_failed", path=self.cfg.textfile, error=str(e))

    def _textfile_loop(self) -> None:
        while not self._stopped:
            self.write_textfile()
            self._wake.wait(self.cfg.textfile_interval)
            self._wake.clear()

    def stop(self) -> None:
        self._stopped = True
        self._wake.set()
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    # -- observer -------------------------------------------------------------
    def on_tick(self, sample: MemSample, decision: Decision) -> None:
        self.sample, self.level = sample, decision.level
        took = self.last_tick_s()
        if took is not None:
            self.ticks.observe(took)

    def on_event(self, event: str, fields: dict[str, Any]) -> None:
        if event == "kill":
            if fields.get("dry_run"):
                self.dry_kills.labels(reason_label(fields)).inc()
            else:
                self.kills.labels(reason_label(fields), str(fields.get("signal"))).inc()
            self.last_kill_time = time.time()
            self.last_victim = {"pid": str(fields.get("pid")), "comm": str(fields.get("comm")),
                                "uid": str(fields.get("uid")), "signal": str(fields.get("signal")),
                                "dry_run": str(bool(fields.get("dry_run"))).lower(),
                                "reason": reason_label(fields)}
            self._wake.set()  # a textfile shows the kill without waiting for the interval
            if not fields.get("dry_run"):
                self.episode_kills.set(int(fields.get("episode_kills") or 0))
        elif event == "memory_recovered":
            self.episodes.observe(int(fields.get("kills") or 0))
            self.episode_kills.set(0)
        elif event == "escalate":
            self.escalations.inc()
        elif event == "victim_stuck":
            self.stuck.inc()
        elif event == "soft_action":
            self.soft.labels(str(fields.get("action")), str(fields.get("outcome"))).inc()
        elif event == "kernel_oom_kill":
            self.kernel_kills.labels(str(fields.get("kind"))).inc()
            self._wake.set()


class _StateCollector:
    """Gauges computed at scrape time from the last sample (none per tick)."""

    def __init__(self, m: Metrics) -> None:
        self.m = m

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily, InfoMetricFamily

        m, s = self.m, self.m.sample
        yield GaugeMetricFamily("pyoomd_level", "Current level: 0 ok, 1 warn, 2 term, 3 kill", value=int(m.level))
        th = GaugeMetricFamily("pyoomd_threshold_bytes", "Configured levels, resolved",
                               labels=["resource", "level"])
        for res, lvl, kib in (("memory", "warn", m.thresholds.mem_warn_kib),
                              ("memory", "term", m.thresholds.mem_term_kib),
                              ("memory", "kill", m.thresholds.mem_kill_kib),
                              ("swap", "term", m.thresholds.swap_term_kib),
                              ("swap", "kill", m.thresholds.swap_kill_kib)):
            th.add_metric([res, lvl], kib * 1024)
        yield th
        if s is not None:
            for name, doc, kib in (("mem_available", "MemAvailable", s.mem_available_kib),
                                   ("mem_total", "MemTotal", s.mem_total_kib),
                                   ("swap_free", "SwapFree", s.swap_free_kib),
                                   ("swap_total", "SwapTotal", s.swap_total_kib)):
                yield GaugeMetricFamily(f"pyoomd_{name}_bytes", f"{doc} at the last sample", value=kib * 1024)
            if s.psi is not None:
                yield GaugeMetricFamily("pyoomd_psi_some_avg10", "Memory PSI some avg10 (%)", value=s.psi.some.avg10)
                if s.psi.full is not None:
                    yield GaugeMetricFamily("pyoomd_psi_full_avg10", "Memory PSI full avg10 (%)",
                                            value=s.psi.full.avg10)
        if m.last_victim is not None and m.last_kill_time is not None:
            yield InfoMetricFamily("pyoomd_last_victim", "The last process chosen", value=m.last_victim)
            yield GaugeMetricFamily("pyoomd_last_kill_timestamp_seconds", "When the last victim was chosen",
                                    value=m.last_kill_time)
