"""The status socket behind ``pyoomd status``.

A Unix stream socket (default ``/run/pyoomd/status.sock``, mode 0600 in a
0700 directory: root only, as the document names processes and command
lines of every user).  A client connects and reads one JSON document; the
server then closes.  It sends nothing: there is no command to parse, so
nothing a client says can change the daemon.  Peers other than root and our
own uid are turned away (SO_PEERCRED) even if the mode was loosened.

The document is built in the server's thread from copies the observer keeps
(the last tick as one tuple, the last kills in a bounded deque under a lock),
so a slow client never touches the loop.
"""

from __future__ import annotations

import collections
import json
import os
import selectors
import socket
import socketserver
import stat
import struct
import threading
import time
from collections.abc import Callable
from typing import Any

from ..model import Decision, MemSample
from ..sense.facts import Facts, kib_cell, user_name
from ..textsafe import cell

LAST_KILLS = 10  # kills kept for `pyoomd status`; older ones are in the journal
# A request finds the last sample older than this: the loop is woken for a
# fresh one (at most FRESH_TIMEOUT_S is waited for it; it takes ~1 ms).
FRESH_S = 1.0
FRESH_TIMEOUT_S = 1.0
CLIENT_TIMEOUT_S = 2.0  # a client that does not read within this is dropped
MAX_DOC_BYTES = 1 << 20  # `pyoomd status` refuses more than this (not a status document)


class StatusObserver:
    """Keeps what ``pyoomd status`` shows.  ``static`` holds what does not
    change between ticks (config files, thresholds, wake-up mode)."""

    def __init__(self, static: Callable[[], dict[str, Any]], clock: Callable[[], float] = time.time,
                 wake: Callable[[], None] | None = None) -> None:
        self.static = static
        self.clock = clock
        self.started = clock()
        self._last: tuple[MemSample, Decision, float] | None = None
        self._kills: collections.deque[dict[str, Any]] = collections.deque(maxlen=LAST_KILLS)
        # The kernel OOM killer's own (kernel_oom_kill events, sense/kmsg.py).
        self._kernel_kills: collections.deque[dict[str, Any]] = collections.deque(maxlen=LAST_KILLS)
        self.kernel_kill_counts: dict[str, int] = {"global": 0, "memcg": 0}
        self._lock = threading.Lock()
        # ``wake`` ends the daemon's idle wait (Daemon.wake): a client asking
        # while memory is plentiful gets a sample taken for it, so the loop
        # needs no periodic tick for us.  Without it, the idle wait comes back
        # at least this often and the sample is at most this old.
        self.wake = wake
        self.idle_every_s = None if wake is not None else 10.0
        self._ticked = threading.Condition()

    def on_tick(self, sample: MemSample, decision: Decision) -> None:
        self._last = (sample, decision, self.clock())  # one assignment: readers see a whole tuple
        if self.wake is not None:
            with self._ticked:
                self._ticked.notify_all()

    def fresh(self, max_age_s: float = FRESH_S, timeout_s: float = FRESH_TIMEOUT_S) -> None:
        """In the server's thread: if the last tick is older than
        ``max_age_s``, wake the loop and wait (bounded) for its next tick."""
        last = self._last
        if self.wake is None or (last is not None and self.clock() - last[2] <= max_age_s):
            return
        with self._ticked:
            self.wake()
            self._ticked.wait_for(lambda: self._last is not last, timeout_s)

    def on_event(self, event: str, fields: dict[str, Any]) -> None:
        if event == "kill":
            row = {k: fields.get(k) for k in ("pid", "comm", "uid", "exe", "signal", "dry_run", "oom_level",
                                              "reason", "why", "rules", "badness", "rss_kib", "swap_kib",
                                              "frees_kib")}
            row["time"] = self.clock()
            with self._lock:
                self._kills.append(row)
        elif event == "kernel_oom_kill":
            row = {k: fields.get(k) for k in ("pid", "comm", "kind", "memcg", "anon_rss_kib", "file_rss_kib",
                                              "shmem_rss_kib", "uid", "oom_score_adj")}
            row["time"] = self.clock()
            with self._lock:
                self._kernel_kills.append(row)
                kind = str(fields.get("kind"))
                self.kernel_kill_counts[kind] = self.kernel_kill_counts.get(kind, 0) + 1
        elif event in ("victim_exited", "victim_stuck", "kill_skipped"):
            with self._lock:
                for row in reversed(self._kills):
                    if row["pid"] == fields.get("pid") and "outcome" not in row:
                        row["outcome"] = event
                        break

    def document(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"pid": os.getpid(), "uptime_s": round(self.clock() - self.started, 1)}
        doc.update(self.static())
        last = self._last
        if last is not None:
            sample, decision, at = last
            doc["level"] = decision.level.name
            doc["reason"] = decision.reason
            doc["next_sample_in_s"] = decision.sleep_s
            doc["last_sample"] = _sample_dict(sample, at)
        with self._lock:
            doc["last_kills"] = [dict(k) for k in self._kills]
            doc["kernel_oom_kills"] = dict(self.kernel_kill_counts)
            doc["last_kernel_oom_kills"] = [dict(k) for k in self._kernel_kills]
        return doc


def _sample_dict(s: MemSample, at: float) -> dict[str, Any]:
    d: dict[str, Any] = {
        "time": at, "mem_total_kib": s.mem_total_kib, "mem_available_kib": s.mem_available_kib,
        "mem_available_pct": round(s.mem_available_pct, 2), "swap_total_kib": s.swap_total_kib,
        "swap_free_kib": s.swap_free_kib, "swap_free_pct": round(s.swap_free_pct, 2),
        "available_estimated": s.available_estimated,
    }
    if s.psi is not None:
        d["psi_some_avg10"] = s.psi.some.avg10
        d["psi_full_avg10"] = s.psi.full.avg10 if s.psi.full is not None else None
    return d


class _Handler(socketserver.BaseRequestHandler):
    server: _Server

    def handle(self) -> None:
        sock: socket.socket = self.request
        sock.settimeout(CLIENT_TIMEOUT_S)
        uid = _peer_uid(sock)
        if uid not in (0, os.geteuid()):
            return  # closed without a word
        self.server.observer.fresh()
        data = json.dumps(self.server.observer.document(), default=str).encode() + b"\n"
        try:
            sock.sendall(data)
        except OSError:
            pass


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    observer: StatusObserver


def _peer_uid(sock: socket.socket) -> int:
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return int(struct.unpack("3i", creds)[1])


class StatusServer:
    """Serves ``observer.document()`` on ``path`` from a thread."""

    def __init__(self, path: str, observer: StatusObserver) -> None:
        self.path = path
        self.observer = observer
        self._server: _Server | None = None

    def start(self) -> StatusServer:
        directory = os.path.dirname(self.path) or "."
        os.makedirs(directory, mode=0o700, exist_ok=True)
        _remove_stale(self.path)
        old = os.umask(0o177)  # the socket is born 0600: no window where it is wider
        try:
            server = _Server(self.path, _Handler, bind_and_activate=True)
        finally:
            os.umask(old)
        os.chmod(self.path, 0o600)
        server.observer = self.observer
        self._server = server
        self._wake_r, self._wake_w = os.pipe()
        self._thread = threading.Thread(target=self._serve, args=(server, self._wake_r), name="pyoomd-status",
                                        daemon=True)
        self._thread.start()
        return self

    def _serve(self, server: _Server, wake_fd: int) -> None:
        """Block until a client or stop(): no periodic wake-ups while idle
        (serve_forever polls every 0.5 s, which doubled the idle daemon's CPU)."""
        with selectors.DefaultSelector() as sel:
            sel.register(server, selectors.EVENT_READ)
            sel.register(wake_fd, selectors.EVENT_READ)
            while True:
                ready = {key.fileobj for key, _ in sel.select()}
                if wake_fd in ready:
                    return
                server.handle_request()

    def stop(self) -> None:
        if self._server is not None:
            os.write(self._wake_w, b"x")
            self._thread.join(2.0)  # it stops selecting before the socket closes under it
            self._server.server_close()
            _remove_stale(self.path)
            os.close(self._wake_r)
            os.close(self._wake_w)
            self._server = None


def _remove_stale(path: str) -> None:
    """Remove a socket left by a previous run; refuse to remove anything else."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise OSError(f"{path} exists and is not a socket; not removing it")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(0.5)
        try:
            probe.connect(path)
        except OSError:
            os.unlink(path)  # nobody listens: left by a daemon that died
            return
    raise OSError(f"{path}: another pyoomd is serving its status there")


def query(path: str, timeout: float = CLIENT_TIMEOUT_S) -> dict[str, Any]:
    """The running daemon's status document.  OSError if it cannot be read,
    ValueError if what came back is not one."""
    return query_peer(path, timeout)[0]


def query_peer(path: str, timeout: float = CLIENT_TIMEOUT_S) -> tuple[dict[str, Any], int]:
    """``query``, and the daemon's pid as our PID namespace sees it (the
    socket's peer credentials, not what the document says)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(path)
        peer = int(struct.unpack("3i", s.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                     struct.calcsize("3i")))[0])
        chunks, size = [], 0
        while size <= MAX_DOC_BYTES:
            chunk = s.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    if not chunks:
        raise ValueError(f"{path}: the daemon closed the connection without an answer (not root?)")
    doc = json.loads(b"".join(chunks))
    if not isinstance(doc, dict):
        raise ValueError(f"{path}: not a status document")
    return doc, peer


def format_status(doc: dict[str, Any], daemon_facts: Facts | None = None) -> str:
    """The human view of a status document; ``daemon_facts``: the daemon's
    own user and USS/PSS/swap, read by the client (sense/facts.py)."""
    head = (f"pyoomd pid {doc.get('pid')}, up {doc.get('uptime_s')} s, "
            f"{'DRY RUN, ' if doc.get('dry_run') else ''}wake-up: {doc.get('wake_mode', '?')}")
    lines = [head]
    if daemon_facts is not None:
        f = daemon_facts
        lines.append(f"daemon      - ({cell(f.why)})" if f.why is not None else
                     f"daemon      user {cell(f.user)}, USS {kib_cell(f.uss_kib)} MiB, PSS {kib_cell(f.pss_kib)} MiB, "
                     f"swap {kib_cell(f.swap_kib)} MiB")
    for f in doc.get("config_files", []):
        lines.append(f"config      {f}")
    for f in doc.get("policy_files", []):
        lines.append(f"policy      {f}")
    th = doc.get("thresholds", {})
    if th:
        lines.append("thresholds  " + ", ".join(f"{k} {v}" for k, v in th.items()))
    totals = doc.get("levels_for")
    if totals:
        lines.append(f"levels for  MemTotal {totals.get('mem_total_kib')} KiB, SwapTotal {totals.get('swap_total_kib')} KiB")
    s = doc.get("last_sample")
    if s:
        psi = f", PSI some {s['psi_some_avg10']:.2f} full {s.get('psi_full_avg10')}" if "psi_some_avg10" in s else ""
        lines.append(f"memory      {s['mem_available_kib'] // 1024} MiB available ({s['mem_available_pct']:.1f}%), "
                     f"swap {s['swap_free_kib'] // 1024} MiB free ({s['swap_free_pct']:.1f}%){psi}")
    lines.append(f"level       {doc.get('level', '?')}: {doc.get('reason', '')}")
    kills = doc.get("last_kills", [])
    lines.append(f"last kills  {len(kills) or 'none'}")
    for k in kills:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(k.get("time") or 0))
        dry = " (dry run)" if k.get("dry_run") else ""
        frees = f", frees {kib_cell(k['frees_kib'])} MiB" if k.get("frees_kib") is not None else ""
        lines.append(f"  {when} {k.get('signal')}{dry} pid {k.get('pid')} {k.get('comm')!r} "
                     f"uid {k.get('uid')} ({cell(user_name(k.get('uid')))}){frees} -> {k.get('outcome', '?')}: "
                     f"{k.get('reason')}")
    counts = doc.get("kernel_oom_kills")
    if counts is not None:
        lines.append(f"kernel kills global {counts.get('global', 0)}, memcg {counts.get('memcg', 0)} "
                     f"({doc.get('kernel_log', 'kernel log ?')})")
    for k in doc.get("last_kernel_oom_kills", []):
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(k.get("time") or 0))
        where = f" in {k.get('memcg')}" if k.get("memcg") else ""
        lines.append(f"  {when} {k.get('kind')}{where}: pid {k.get('pid')} {k.get('comm')!r} uid {k.get('uid')}, "
                     f"anon {k.get('anon_rss_kib')} KiB, file {k.get('file_rss_kib')} KiB, "
                     f"shmem {k.get('shmem_rss_kib')} KiB")
    return "\n".join(lines)
