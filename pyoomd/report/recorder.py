"""The flight recorder: what the loop read and said, kept in a bounded ring.

The daemon reads memory through a ``Sampler`` and everything else (the
process table, cgroup files, xattrs) through one ``Procfs``.  The recorder
wraps both (``RecordingSampler``, ``RecordingProcfs``: pass-through, each
answer appended to the ring with the loop's clock), and as an observer it
appends the events and level changes.  On each kill, once the victim's fate
is known, the ring is written to a trace file (``pyoomd/trace.py``, the
format; TRACE.md) that ``pyoomd replay`` drives the same daemon code from.

The ring is bounded in seconds and in bytes: entries go to a chunk as plain
tuples; a full chunk is sealed (marshal + zlib level 1, ~1 ms for a 128 KiB
chunk) and chunks older than ``seconds`` or beyond ``max_bytes`` are
dropped, oldest first.  Light: stdlib only, no JSON or gzip until a trace
is written (the loop's module list: tests/test_loop.py).
"""

from __future__ import annotations

import marshal
import os
import threading
import time
import zlib
from collections import deque
from collections.abc import Callable
from typing import Any

from ..model import Decision, MemSample
from ..sense.procfs import Procfs

# A sealed chunk holds about this much (estimated in-memory bytes of the
# raw tuples).  128 KiB: ~1,000 samples or ~800 file reads; sealing one
# (marshal + zlib -1) takes ~1 ms here, so a tick pays it rarely.
CHUNK_BYTES = 128 << 10
# Estimated Python overhead of one entry (tuple, float, path str) beyond the
# bytes it carries; measured with tracemalloc on a scan of 300 processes:
# ~190 B per file-read entry besides its data.
ENTRY_OVERHEAD = 190
# After a victim exited (or got stuck), go on recording this long before
# writing the trace, so it shows its memory coming back.
AFTER_FATE_S = 1.0
# A kill whose fate never comes (dry-run, the daemon busy) is written this
# long after the kill event at the latest.
AFTER_KILL_MAX_S = 10.0
# While a trace is due or being written, the idle wait comes back this often.
PENDING_TICK_S = 0.25


class Ring:
    """Entries ``(kind, t, ...)`` for the last ``seconds``, at most ~``max_bytes``."""

    def __init__(self, seconds: float, max_bytes: int, chunk_bytes: int = CHUNK_BYTES) -> None:
        self.seconds = seconds
        self.max_bytes = max_bytes
        self.chunk_bytes = min(chunk_bytes, max(4096, max_bytes // 4))
        self._cur: list[tuple[Any, ...]] = []
        self._cur_bytes = 0
        self._sealed: deque[tuple[float, float, bytes]] = deque()  # (first t, last t, blob)
        self._sealed_bytes = 0
        self.dropped_chunks = 0
        self.lock = threading.Lock()  # snapshot() from another thread (status socket)

    def add(self, entry: tuple[Any, ...], size: int) -> None:
        self._cur.append(entry)
        self._cur_bytes += size
        if self._cur_bytes >= self.chunk_bytes:
            self.seal()

    def seal(self) -> None:
        with self.lock:
            cur = self._cur
            if not cur:
                return
            try:
                raw = marshal.dumps(cur)
            except ValueError:  # an event field marshal does not know: keep its text
                raw = marshal.dumps([_plain(e) for e in cur])
            blob = zlib.compress(raw, 1)
            self._sealed.append((cur[0][1], cur[-1][1], blob))
            self._sealed_bytes += len(blob)
            self._cur, self._cur_bytes = [], 0
            self._trim(cur[-1][1])

    def _trim(self, now: float) -> None:
        while self._sealed and (self._sealed_bytes > self.max_bytes - self.chunk_bytes
                                or self._sealed[0][1] < now - self.seconds):
            self._sealed_bytes -= len(self._sealed.popleft()[2])
            self.dropped_chunks += 1

    @property
    def nbytes(self) -> int:
        """Compressed chunks plus the estimate of the open one."""
        return self._sealed_bytes + self._cur_bytes

    def snapshot(self) -> tuple[list[bytes], list[tuple[Any, ...]]]:
        """The sealed blobs and a copy of the open chunk (cheap: no decoding)."""
        with self.lock:
            return [b for _, _, b in self._sealed], list(self._cur)


def entries_of(blobs: list[bytes], cur: list[tuple[Any, ...]], since: float | None = None) -> list[tuple[Any, ...]]:
    """Decode a snapshot, oldest first; ``since``: drop entries before it."""
    out: list[tuple[Any, ...]] = []
    for blob in blobs:
        out.extend(marshal.loads(zlib.decompress(blob)))
    out.extend(cur)
    if since is not None:
        out = [e for e in out if e[1] >= since]
    return out


def _plain(v: Any) -> Any:
    """Marshal-safe copy: tuples/lists/dicts kept, unknown objects as text."""
    if isinstance(v, (str, bytes, int, float, bool)) or v is None:
        return v
    if isinstance(v, tuple):
        return tuple(_plain(x) for x in v)
    if isinstance(v, list):
        return [_plain(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    return str(v)


def psi_tuple(psi: Any) -> tuple[Any, ...] | None:
    """A Pressure as a plain tuple (some avg10/60/300/total, full ... or None)."""
    if psi is None:
        return None
    s, f = psi.some, psi.full
    full = (f.avg10, f.avg60, f.avg300, f.total_us) if f is not None else None
    return (s.avg10, s.avg60, s.avg300, s.total_us, full)


class RecordingSampler:
    """A Sampler that appends every sample it returns to the ring:
    ``("s", t, total, avail, swap_total, swap_free, estimated, psi)``, psi
    ``0`` when it is the same object as the last one recorded."""

    def __init__(self, inner: Any, ring: Ring, clock: Callable[[], float] = time.monotonic) -> None:
        self.inner = inner
        self.ring = ring
        self.clock = clock
        self.backend: str = inner.backend
        self.has_psi: bool = inner.has_psi
        self._psi: Any = None
        if hasattr(inner, "idle_wait"):
            self.idle_wait = self._idle_wait

    def _add(self, t: float, s: MemSample) -> None:
        psi = s.psi
        if psi is not None and psi is self._psi:
            p: Any = 0
        else:
            p, self._psi = psi_tuple(psi), psi
        self.ring.add(("s", t, s.mem_total_kib, s.mem_available_kib, s.swap_total_kib, s.swap_free_kib,
                       s.available_estimated, p), 160)

    def read(self) -> MemSample:
        s: MemSample = self.inner.read()
        self._add(self.clock(), s)
        return s

    def _idle_wait(self, params: Any) -> Any:
        got = self.inner.idle_wait(params)
        now = self.clock()
        if got.prev_age_s is not None:  # the last sample above the gate: the decline's last step
            s = got.sample
            self.ring.add(("s", now - got.prev_age_s, s.mem_total_kib, got.prev_available_kib, s.swap_total_kib,
                           s.swap_free_kib, s.available_estimated, 0), 160)
        self._add(now, got.sample)
        return got

    def close(self) -> None:
        self.inner.close()


class RecordingVmstat:
    """The daemon's Vmstat, each reading appended: ``("v", t, counters|None)``."""

    def __init__(self, inner: Any, ring: Ring, clock: Callable[[], float] = time.monotonic) -> None:
        self.inner, self.ring, self.clock = inner, ring, clock

    def read(self) -> Any:
        v = self.inner.read()
        self.ring.add(("v", self.clock(), tuple(v) if v is not None else None), 120)
        return v

    def close(self) -> None:
        self.inner.close()


class RecordingProcfs(Procfs):
    """Procfs that appends what it answered: ``("r", t, path, bytes|errno)``
    for reads, ``("l", t, dir, pids)`` for listings, ``("k", t, path,
    target|errno)`` for links, ``("c", t, dir, children|errno)``,
    ``("d", t, path, bool)`` isdir, ``("x", t, path, bool)`` exists,
    ``("u", t, path, uid|-errno)`` owner, ``("a", t, path, name, value|errno)``."""

    def __init__(self, root: str, ring: Ring, clock: Callable[[], float] = time.monotonic, **kw: str) -> None:
        super().__init__(root, **kw)
        self.ring = ring
        self.clock = clock

    def read(self, path: str, limit: int = 1 << 20) -> bytes:
        try:
            data = super().read(path, limit)
        except OSError as e:
            self.ring.add(("r", self.clock(), path, e.errno or 0), ENTRY_OVERHEAD)
            raise
        self.ring.add(("r", self.clock(), path, data), ENTRY_OVERHEAD + len(data))
        return data

    def pids(self) -> list[int]:
        out = super().pids()
        self.ring.add(("l", self.clock(), self.root, tuple(out)), ENTRY_OVERHEAD + 40 * len(out))
        return out

    def tids(self, pid: int) -> list[int]:
        path = self.pid_file(pid, "task")
        try:
            out = super().tids(pid)
        except OSError as e:
            self.ring.add(("l", self.clock(), path, e.errno or 0), ENTRY_OVERHEAD)
            raise
        self.ring.add(("l", self.clock(), path, tuple(out)), ENTRY_OVERHEAD + 40 * len(out))
        return out

    def readlink_pid(self, pid: int, name: str) -> str:
        path = self.pid_file(pid, name)
        try:
            out = super().readlink_pid(pid, name)
        except OSError as e:
            self.ring.add(("k", self.clock(), path, e.errno or 0), ENTRY_OVERHEAD)
            raise
        self.ring.add(("k", self.clock(), path, out), ENTRY_OVERHEAD + len(out))
        return out

    @property
    def self_pid(self) -> int:
        pid = Procfs.self_pid.fget(self)  # type: ignore[attr-defined]
        self.ring.add(("k", self.clock(), f"{self.root}/self", str(pid)), ENTRY_OVERHEAD)
        return int(pid)

    def cgroup_children(self, cgroup_dir: str) -> list[str]:
        try:
            out = super().cgroup_children(cgroup_dir)
        except OSError as e:
            self.ring.add(("c", self.clock(), cgroup_dir, e.errno or 0), ENTRY_OVERHEAD)
            raise
        self.ring.add(("c", self.clock(), cgroup_dir, tuple(out)), ENTRY_OVERHEAD + sum(map(len, out)))
        return out

    def isdir(self, path: str) -> bool:
        out = super().isdir(path)
        self.ring.add(("d", self.clock(), path, out), ENTRY_OVERHEAD)
        return out

    def exists(self, path: str) -> bool:
        out = super().exists(path)
        self.ring.add(("x", self.clock(), path, out), ENTRY_OVERHEAD)
        return out

    def owner_uid(self, path: str) -> int:
        try:
            out = super().owner_uid(path)
        except OSError as e:
            self.ring.add(("u", self.clock(), path, -(e.errno or 1)), ENTRY_OVERHEAD)
            raise
        self.ring.add(("u", self.clock(), path, out), ENTRY_OVERHEAD)
        return out

    def getxattr(self, path: str, name: str) -> bytes:
        try:
            out = super().getxattr(path, name)
        except OSError as e:
            self.ring.add(("a", self.clock(), path, name, e.errno or 0), ENTRY_OVERHEAD)
            raise
        self.ring.add(("a", self.clock(), path, name, out), ENTRY_OVERHEAD + len(out))
        return out


class Recorder:
    """The observer side: events and level changes into the ring; after each
    kill, once the victim's fate is known (+ AFTER_FATE_S), the ring is
    written to a trace file in a thread, then a ``trace_written`` (or
    ``trace_failed``) event names it.  ``header()`` gives the plan in force."""

    def __init__(self, daemon: Any, ring: Ring, cfg: Any, header: Callable[[], dict[str, Any]],
                 clock: Callable[[], float] = time.monotonic, write_on_kill: bool = True) -> None:
        self.daemon = daemon
        self.write_on_kill = write_on_kill
        self.ring = ring
        self.cfg = cfg
        self.header = header
        self.clock = clock
        self._level: Any = None
        self._due: float | None = None  # when to write the trace
        self._victim: int | None = None
        self._job: tuple[threading.Thread, dict[str, Any]] | None = None
        self._dump = False  # a dump was asked for (SIGUSR1)

    @property
    def idle_every_s(self) -> float | None:
        return PENDING_TICK_S if self._due is not None or self._job is not None or self._dump else None

    def on_event(self, event: str, fields: dict[str, Any]) -> None:
        now = self.clock()
        self.ring.add(("e", now, event, fields), 400 + 200 * len(fields.get("candidates", ())))
        if event == "kill" and self._due is None and self.write_on_kill:  # one trace per kill (dry-run repeats one each grace)
            self._victim = fields.get("pid")
            self._due = now + AFTER_KILL_MAX_S
        elif event in ("victim_exited", "victim_stuck", "kill_skipped") and self._due is not None:
            self._due = min(self._due, now + AFTER_FATE_S)

    def request_dump(self) -> None:
        """SIGUSR1 (``pyoomd status --dump-trace``): write the ring now, as a
        ``dump`` trace, on the next tick (the loop is woken for it)."""
        self._dump = True
        wake = getattr(self.daemon, "wake", None)
        if wake is not None:
            wake()

    def on_tick(self, sample: MemSample, decision: Decision) -> None:
        if decision.level != self._level:
            self._level = decision.level
            self.ring.add(("L", self.clock(), decision.level.name, decision.reason), 200)
        job = self._job
        if job is not None and "done" in job[1]:
            self._job = None
            self._report(job[1])
        if self._due is not None and self._job is None and self.clock() >= self._due:
            self._due = None
            self._start_write("kill", self._victim)
        if self._dump and self._job is None:
            self._dump = False
            self._start_write("dump", None, force=True)

    def _settings(self) -> Any:
        """The recorder settings in force (a reload may move the directory or
        its bounds, or turn writing off; the ring keeps its size)."""
        return getattr(self.daemon.settings, "recorder", None) or self.cfg

    def _start_write(self, reason: str, victim: int | None, force: bool = False) -> None:
        cfg = self._settings()
        if not cfg.enabled and not force:
            return
        header = dict(self.header(), reason=reason, victim=victim)
        blobs, cur = self.ring.snapshot()
        since = self.clock() - self.ring.seconds
        box: dict[str, Any] = {}

        def work() -> None:
            try:
                from ..trace import prune_dir, trace_name, write_trace

                entries = entries_of(blobs, cur, since)
                path = os.path.join(cfg.dir, trace_name(header))
                box["info"] = write_trace(path, header, entries)
                box["removed"] = prune_dir(cfg.dir, cfg.max_files, int(cfg.max_mib * (1 << 20)))
            except Exception as e:  # noqa: BLE001 - a full disk must not stop the killer
                box["error"] = f"{type(e).__name__}: {e}"
            finally:
                box["done"] = True
                wake = getattr(self.daemon, "wake", None)
                if wake is not None:
                    wake()

        if reason == "dump":
            self.daemon.emit("info", "trace_dump_requested", dir=cfg.dir)
        t = threading.Thread(target=work, name="pyoomd-trace", daemon=True)
        self._job = (t, box)
        t.start()

    def _report(self, box: dict[str, Any]) -> None:
        if "error" in box:
            self.daemon.emit("error", "trace_failed", dir=self._settings().dir, error=box["error"])
        else:
            self.daemon.emit("info", "trace_written", **box["info"], removed=box.get("removed", []))

    def stop(self) -> None:
        """At exit: a trace still due is written now; wait a little for it."""
        if self._due is not None and self._job is None:
            self._due = None
            self._start_write("kill", self._victim)
        job = self._job
        if job is not None:
            job[0].join(5.0)


def recording(procfs: Procfs, sampler: Any, cfg: Any) -> tuple[Ring, RecordingProcfs, RecordingSampler]:
    """The ring and the recording seams to build the daemon with (loop.build)."""
    ring = Ring(cfg.seconds, int(cfg.memory_mib * (1 << 20)))
    rp = RecordingProcfs(procfs.root, ring, cgroup_root=procfs.cgroup_root, sys_root=procfs.sys_root)
    return ring, rp, RecordingSampler(sampler, ring)


def attach(daemon: Any, ring: Ring, cfg: Any, header: Callable[[], dict[str, Any]],
           write_on_kill: bool = True) -> Recorder:
    """The observer, and the daemon's vmstat counters recorded too."""
    daemon.vmstat = RecordingVmstat(daemon.vmstat, ring)
    rec = Recorder(daemon, ring, cfg, header, write_on_kill=write_on_kill)
    daemon.observers.append(rec)
    return rec
