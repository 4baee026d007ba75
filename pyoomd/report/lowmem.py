"""Low-memory warnings to applications, as low-memory-monitor sends them.

low-memory-monitor (freedesktop.org) owns ``org.freedesktop.LowMemoryMonitor``
on the system bus and broadcasts the signal ``LowMemoryWarning(y level)``
from ``/org/freedesktop/LowMemoryMonitor``, interface
``org.freedesktop.LowMemoryMonitor``, with levels 50 (low), 100 (medium)
and 255 (critical).  GLib's ``GMemoryMonitor`` (its D-Bus backend) watches
that name and turns the signal into ``low-memory-warning``, which GNOME and
GTK applications answer by dropping caches; anyone else can listen with a
match rule.

Where no low-memory-monitor runs, pyoomd takes its place: at start it asks
for the name (``DO_NOT_QUEUE | ALLOW_REPLACEMENT``: a low-memory-monitor
started later may take it over, and then pyoomd stops).  If another process
already owns it, pyoomd stays silent and says so (``low_memory_monitor_present``).
Levels: WARN -> 50, TERM -> 100, KILL -> 255, sent when memory falls to that
level (not while it stays there), each level at most once per
``min_interval`` (15 s by default: an application given a minute's quiet
to trim its caches need not be told again every tick of a long episode).

Never blocking the loop: on_tick only puts a level on a bounded queue; a
worker thread owns the connection.  jeepney is imported only in that thread,
and only when the bus socket exists (a server without D-Bus pays nothing).
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..model import Decision, Level, MemSample

NAME = "org.freedesktop.LowMemoryMonitor"
PATH = "/org/freedesktop/LowMemoryMonitor"
INTERFACE = "org.freedesktop.LowMemoryMonitor"
SIGNAL = "LowMemoryWarning"
# low-memory-monitor's levels (its README; GMemoryMonitorWarningLevel).
LEVELS = {Level.WARN: 50, Level.TERM: 100, Level.KILL: 255}
LEVEL_NAMES = {50: "low", 100: "medium", 255: "critical"}
# org.freedesktop.DBus.RequestName flags and replies.
ALLOW_REPLACEMENT, DO_NOT_QUEUE = 0x1, 0x4
PRIMARY_OWNER, EXISTS, ALREADY_OWNER = 1, 3, 4
CALL_TIMEOUT_S = 2.0
QUEUE_MAX = 8


def socket_missing(address: str) -> str | None:
    """The path of a ``unix:path=`` address whose socket does not exist."""
    for part in address.split(";"):
        if part.startswith("unix:"):
            for kv in part[5:].split(","):
                if kv.startswith("path=") and not os.path.exists(kv[5:]):
                    return kv[5:]
    return None


@dataclass
class LowMemoryMonitor:
    """An observer: LowMemoryWarning on the system bus at WARN, TERM, KILL.

    ``log(severity, event, **fields)`` reports what happened."""

    address: str
    min_interval: float
    log: Callable[..., None]
    clock: Callable[[], float] = time.monotonic
    _level: Level = Level.OK
    _last: dict[int, float] = field(default_factory=dict)
    _queue: queue.Queue[tuple[int, str] | None] = field(default_factory=lambda: queue.Queue(QUEUE_MAX))
    _thread: threading.Thread | None = None
    _stopped: bool = False
    active: bool = False  # we own the name and may send
    ready: threading.Event = field(default_factory=threading.Event)  # start-up done (owner or not)
    _pipe: tuple[int, int] | None = None  # wakes the worker (on_tick, stop)

    def start(self) -> LowMemoryMonitor:
        self._thread = threading.Thread(target=self._work, name="pyoomd-lowmem", daemon=True)
        self._thread.start()
        return self

    # -- observer ---------------------------------------------------------------
    def on_event(self, event: str, fields: dict[str, Any]) -> None:
        pass

    def on_tick(self, sample: MemSample, decision: Decision) -> None:
        prev, self._level = self._level, decision.level
        if decision.level <= prev or decision.level not in LEVELS:
            return
        level = LEVELS[decision.level]
        now = self.clock()
        if now - self._last.get(level, -1e9) < self.min_interval:
            return
        self._last[level] = now
        try:
            self._queue.put_nowait((level, decision.level.name))
        except queue.Full:
            return  # the worker is stuck on the bus: the loop goes on
        self._wake()

    def stop(self) -> None:
        """End the worker and give the name back (a reload rebuilds us)."""
        self._stopped = True
        self._wake()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(1.0)

    # -- worker -----------------------------------------------------------------
    def _wake(self) -> None:
        if self._pipe is not None:
            try:
                os.write(self._pipe[1], b"w")
            except OSError:
                pass  # full: a wake is pending already

    def _work(self) -> None:
        conn = None
        try:
            conn = self._claim()
        finally:
            self.ready.set()
        if conn is None:
            return
        try:
            self._serve(conn)
        finally:
            conn.close()
            if self._pipe is not None:
                for fd in self._pipe:
                    os.close(fd)
                self._pipe = None

    def _serve(self, conn: Any) -> None:
        """Send what on_tick queues and answer what the bus brings: GLib's
        GMemoryMonitor makes a proxy for our object, which first asks for its
        properties (and waits 25 s for an answer that does not come); a
        NameLost means a low-memory-monitor took the name over."""
        import select

        poller = select.poll()
        poller.register(conn.sock.fileno(), select.POLLIN)
        assert self._pipe is not None
        poller.register(self._pipe[0], select.POLLIN)
        while True:
            while True:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None or self._stopped:
                    return
                if self.active:
                    self._send(conn, *item)
            for fd, _ in poller.poll():
                if fd == self._pipe[0]:
                    try:
                        os.read(fd, 512)
                    except OSError:
                        pass
                else:
                    self._answer(conn)
            if self._stopped:
                return

    def _answer(self, conn: Any) -> None:
        from jeepney import MessageType, new_error, new_method_return

        while True:
            try:
                msg = conn.receive(timeout=0.001)
            except TimeoutError:
                return
            except Exception as e:  # noqa: BLE001 - the bus went away: stop (the killer goes on)
                self.active = False
                self._stopped = True
                self.log("warning", "low_memory_monitor_failed", name=NAME, error=str(e) or repr(e))
                return
            f = msg.header.fields
            kind, iface, member = msg.header.message_type, f.get(2), f.get(3)
            if kind == MessageType.signal and member == "NameLost" and msg.body and msg.body[0] == NAME:
                self.active = False
                self.log("info", "low_memory_monitor_replaced", name=NAME,
                         message="another process took the name: pyoomd stays silent from now")
            if kind != MessageType.method_call:
                continue
            if iface == "org.freedesktop.DBus.Properties" and member == "GetAll":
                conn.send(new_method_return(msg, "a{sv}", ({},)))
            elif iface == "org.freedesktop.DBus.Introspectable" and member == "Introspect":
                conn.send(new_method_return(msg, "s", (INTROSPECTION,)))
            elif iface == "org.freedesktop.DBus.Peer" and member == "Ping":
                conn.send(new_method_return(msg))
            else:
                conn.send(new_error(msg, "org.freedesktop.DBus.Error.UnknownMethod", "s",
                                    (f"{NAME} (pyoomd) has no method {member}",)))

    def _claim(self) -> Any:
        """Connect and ask for the name; the connection, or None (logged)."""
        missing = socket_missing(self.address)
        if missing is not None:
            self.log("info", "low_memory_monitor_unavailable", system_bus=self.address,
                     error=f"no system bus socket at {missing}", message="no LowMemoryWarning will be sent")
            return None
        from jeepney import DBusAddress, message_bus, new_method_call
        from jeepney.io.blocking import open_dbus_connection
        from jeepney.wrappers import unwrap_msg

        try:
            conn = open_dbus_connection(self.address, auth_timeout=CALL_TIMEOUT_S)
        except Exception as e:  # noqa: BLE001 - OSError, auth failure, bad address: all mean no bus
            self.log("info", "low_memory_monitor_unavailable", system_bus=self.address, error=str(e) or repr(e),
                     message="no LowMemoryWarning will be sent")
            return None
        try:
            reply = conn.send_and_get_reply(message_bus.RequestName(NAME, ALLOW_REPLACEMENT | DO_NOT_QUEUE),
                                            timeout=CALL_TIMEOUT_S)
            code = int(unwrap_msg(reply)[0])
            if code in (PRIMARY_OWNER, ALREADY_OWNER):
                self.active = True
                self._pipe = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
                self.log("info", "low_memory_monitor_started", system_bus=self.address, name=NAME,
                         levels={lv.name: b for lv, b in LEVELS.items()}, min_interval_s=self.min_interval)
                return conn
            owner = None
            if code == EXISTS:
                dbus = DBusAddress("/org/freedesktop/DBus", bus_name="org.freedesktop.DBus",
                                   interface="org.freedesktop.DBus")
                r = conn.send_and_get_reply(new_method_call(dbus, "GetNameOwner", "s", (NAME,)),
                                            timeout=CALL_TIMEOUT_S)
                owner = str(r.body[0]) if r.body else None
            self.log("info", "low_memory_monitor_present", system_bus=self.address, name=NAME, owner=owner,
                     message=f"{NAME} has another owner (low-memory-monitor?): pyoomd stays silent")
        except Exception as e:  # noqa: BLE001 - AccessDenied (no D-Bus policy allows the name), timeout
            self.log("warning", "low_memory_monitor_failed", system_bus=self.address, name=NAME,
                     error=str(e) or repr(e))
        conn.close()
        return None

    def _send(self, conn: Any, level: int, oom_level: str) -> None:
        """Emit one LowMemoryWarning from the name's owner."""
        from jeepney import DBusAddress, new_signal

        try:
            conn.send(new_signal(DBusAddress(PATH, interface=INTERFACE), SIGNAL, "y", (level,)))
        except Exception as e:  # noqa: BLE001 - a bus fails in many ways; none may stop the daemon
            self.log("warning", "low_memory_warning_failed", lmm_level=level, error=str(e) or repr(e))
            return
        self.log("info", "low_memory_warning", lmm_level=level, lmm_level_name=LEVEL_NAMES[level], oom_level=oom_level)


INTROSPECTION = f"""<!DOCTYPE node PUBLIC "-//freedesktop//DTD D-BUS Object Introspection 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/introspect.dtd">
<node>
  <interface name="{INTERFACE}">
    <signal name="{SIGNAL}"><arg name="level" type="y"/></signal>
  </interface>
</node>
"""
