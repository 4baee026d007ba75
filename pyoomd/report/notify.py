"""Desktop notifications: org.freedesktop.Notifications.Notify over D-Bus.

Each user with an active graphical session (systemd-logind's sessions of
type x11, wayland or mir that are Active, class "user"; ``notify.sessions:
all`` widens it to every user with a session bus) is told through their
session bus (``/run/user/<uid>/bus``, a socket owned by that uid), in plain
words, what was killed:
"pyoomd killed firefox (pid 4242), 7.1 GiB, to keep the system responsive".
jeepney (pure-Python D-Bus) speaks the protocol; nothing is spawned but a
short-lived fork.

Reaching another user's bus as root: the session bus accepts only its owner,
and D-Bus's EXTERNAL authentication proves a uid with the socket's peer
credentials (SO_PEERCRED), so root cannot simply claim to be uid 1000 (and
jeepney claims ``geteuid()``).  Changing our own uid is not an option either:
glibc's setuid() changes every thread, so the killing loop would lose its
privileges for a moment.  Each notification to another user is therefore
sent by a short-lived fork that drops to that user (setgroups, setgid,
setuid) and exits; it never execs, so it needs no interpreter on disk and
costs a few milliseconds.  When the target uid is our own, we connect
directly.

Never blocking the loop: the observer only puts a message on a bounded queue;
a worker thread talks to the buses, each with a timeout.  Rate limit: at
most one notification per user every ``min_interval``; those dropped in
between are counted and mentioned in the next one.
"""

from __future__ import annotations

import os
import pwd
import queue
import signal
import stat
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..model import Decision, Level, MemSample
from ..textsafe import markup_escape
from ..units import human_kib

if TYPE_CHECKING:  # annotations only
    from ..settings.schema import NotifyConfig

APP_NAME = "pyoomd"
# Fixed by the Desktop Notifications Specification.
NOTIFY_PATH = "/org/freedesktop/Notifications"
NOTIFY_NAME = "org.freedesktop.Notifications"
URGENCY_NORMAL, URGENCY_CRITICAL = 1, 2
# A notification daemon answers in a few ms; a bus that does not answer in
# 2 s is wedged (or swapped out) and is skipped rather than waited for.
CALL_TIMEOUT_S = 2.0
QUEUE_MAX = 8  # one kill per tick, a worker that drains in ms: 8 is ample


@dataclass(frozen=True, slots=True)
class Message:
    kind: str  # "kill" or "warning"
    summary: str
    body: str
    urgency: int = URGENCY_CRITICAL


@dataclass(frozen=True, slots=True)
class Session:
    uid: int
    bus_path: str


@dataclass
class _Budget:
    last: float = -1e9
    suppressed: int = 0


def kill_message(fields: dict[str, Any]) -> Message:
    # comm is anyone's choice: the body is markup to the notification server.
    comm, pid = markup_escape(str(fields.get("comm") or "?")), fields.get("pid")
    size = human_kib(int(fields.get("rss_kib") or 0) + int(fields.get("swap_kib") or 0))
    if fields.get("dry_run"):
        body = f"pyoomd would have killed {comm} (pid {pid}), {size}, to keep the system responsive (dry run)"
        return Message("kill", "Low memory (dry run)", body, URGENCY_NORMAL)
    body = f"pyoomd killed {comm} (pid {pid}), {size}, to keep the system responsive"
    return Message("kill", "Low memory: a program was closed", body)


def warning_message(sample: MemSample) -> Message:
    body = (f"Only {human_kib(sample.mem_available_kib)} of memory is available "
            f"({sample.mem_available_pct:.0f} %). Save your work: pyoomd will close the "
            "largest program if memory runs out.")
    return Message("warning", "Memory is running low", body, URGENCY_NORMAL)


def find_sessions(run_user_dir: str) -> list[Session]:
    """Users with a session bus: ``<dir>/<uid>/bus`` a socket owned by uid
    (a socket owned by someone else is not that user's bus, and is skipped)."""
    out = []
    try:
        names = os.listdir(run_user_dir)
    except OSError:
        return []
    for name in sorted(names):
        if not name.isdigit():
            continue
        path = os.path.join(run_user_dir, name, "bus")
        try:
            st = os.lstat(path)
        except OSError:
            continue
        if stat.S_ISSOCK(st.st_mode) and st.st_uid == int(name):
            out.append(Session(int(name), path))
    return out


GRAPHICAL_TYPES = ("x11", "wayland", "mir")
LOGIND_NAME = "org.freedesktop.login1"


def graphical_uids(address: str, timeout: float = CALL_TIMEOUT_S) -> set[int]:
    """The uids with an active graphical session, asked of systemd-logind on
    the system bus at ``address`` (ListSessions, then each session's Type,
    Active and Class).  Raises OSError (or a jeepney error) when logind
    cannot be asked."""
    from jeepney import DBusAddress, Properties, new_method_call
    from jeepney.io.blocking import open_dbus_connection
    from jeepney.wrappers import unwrap_msg

    manager = DBusAddress("/org/freedesktop/login1", bus_name=LOGIND_NAME,
                          interface=LOGIND_NAME + ".Manager")
    uids: set[int] = set()
    with open_dbus_connection(address, auth_timeout=timeout) as conn:
        reply = conn.send_and_get_reply(new_method_call(manager, "ListSessions"), timeout=timeout)
        for _sid, uid, _user, _seat, path in unwrap_msg(reply)[0]:
            session = DBusAddress(path, bus_name=LOGIND_NAME, interface=LOGIND_NAME + ".Session")
            props = unwrap_msg(conn.send_and_get_reply(Properties(session).get_all(), timeout=timeout))[0]
            value = {k: v[1] for k, v in props.items()}
            if value.get("Active") is True and value.get("Type") in GRAPHICAL_TYPES \
                    and value.get("Class", "user") == "user":
                uids.add(int(uid))
    return uids


def send_direct(bus_path: str, msg: Message, timeout: float = CALL_TIMEOUT_S) -> int:
    """Notify over the bus at ``bus_path`` as ourselves; the notification id."""
    from jeepney import DBusAddress, DBusErrorResponse, new_method_call
    from jeepney.io.blocking import open_dbus_connection
    from jeepney.wrappers import unwrap_msg

    addr = DBusAddress(NOTIFY_PATH, bus_name=NOTIFY_NAME, interface=NOTIFY_NAME)
    call = new_method_call(addr, "Notify", "susssasa{sv}i", (
        APP_NAME, 0, "dialog-warning", msg.summary, msg.body, [],
        {"urgency": ("y", msg.urgency), "category": ("s", "device")}, -1,
    ))
    with open_dbus_connection(f"unix:path={bus_path}", auth_timeout=timeout) as conn:
        reply = conn.send_and_get_reply(call, timeout=timeout)
    try:
        return int(unwrap_msg(reply)[0])
    except DBusErrorResponse as e:
        raise OSError(f"{e.name}: {e.data}") from None


def send_as(uid: int, bus_path: str, msg: Message, timeout: float = CALL_TIMEOUT_S) -> None:
    """Send as ``uid`` (see the module doc): directly if it is us, else from
    a fork that becomes that user.  Raises OSError on failure."""
    if uid == os.geteuid():
        send_direct(bus_path, msg, timeout)
        return
    if os.geteuid() != 0:
        raise PermissionError(f"cannot reach uid {uid}'s session bus without root")
    try:
        gid = pwd.getpwuid(uid).pw_gid
    except KeyError:
        gid = uid  # a uid without a passwd entry (systemd DynamicUser): same-numbered group
    import jeepney.io.blocking  # noqa: F401  (imported before the fork: the child imports nothing)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads: the child execs nothing
        pid = os.fork()
    if pid == 0:  # pragma: no cover - the child's result is its exit status
        code = 1
        try:
            os.setgroups([])
            os.setgid(gid)
            os.setuid(uid)
            send_direct(bus_path, msg, timeout)
            code = 0
        finally:
            os._exit(code)
    _wait_child(pid, 2 * timeout + 1.0, uid)


def _wait_child(pid: int, timeout: float, uid: int) -> None:
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            if os.waitstatus_to_exitcode(status) != 0:
                raise OSError(f"notification to uid {uid} failed (no notification service?)")
            return
        if time.monotonic() >= deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise TimeoutError(f"notification to uid {uid} timed out")
        time.sleep(0.005)


@dataclass
class Notifier:
    """An observer: queues notifications; a worker thread sends them.

    ``log(event, **fields)`` reports what was sent or why not."""

    cfg: NotifyConfig
    log: Callable[..., None]
    clock: Callable[[], float] = time.monotonic
    send: Callable[[int, str, Message], None] = send_as
    # Who has an active graphical session (notify.sessions: graphical).
    graphical: Callable[[str], set[int]] = graphical_uids
    _fallback_told: bool = False
    _stopped: bool = False
    _queue: queue.Queue[Message] = field(default_factory=lambda: queue.Queue(QUEUE_MAX))
    _budgets: dict[tuple[int, str], _Budget] = field(default_factory=dict)
    _level: Level = Level.OK
    _thread: threading.Thread | None = None

    def start(self) -> Notifier:
        self._thread = threading.Thread(target=self._work, name="pyoomd-notify", daemon=True)
        self._thread.start()
        return self

    def on_event(self, event: str, fields: dict[str, Any]) -> None:
        if event == "kill":
            self._put(kill_message(fields))

    def on_tick(self, sample: MemSample, decision: Decision) -> None:
        prev, self._level = self._level, decision.level
        if self.cfg.warn_low_memory and decision.level >= Level.WARN and prev < Level.WARN:
            self._put(warning_message(sample))

    def _put(self, msg: Message) -> None:
        try:
            self._queue.put_nowait(msg)
        except queue.Full:
            pass  # the worker is stuck on a bus: this one is lost, the loop goes on

    def stop(self) -> None:
        """End the worker (a reload replaced this notifier) once it is done
        with what it is sending."""
        self._stopped = True
        try:
            self._queue.put_nowait(None)  # type: ignore[arg-type]
        except queue.Full:
            pass  # the worker sees _stopped after its current message

    def _work(self) -> None:
        while not self._stopped:
            msg = self._queue.get()
            if msg is None or self._stopped:
                return
            self.deliver(msg)

    def deliver(self, msg: Message) -> int:
        """Send ``msg`` to every session within its rate limit; how many got it."""
        sent = 0
        for s in self.recipients():
            budget = self._budgets.setdefault((s.uid, msg.kind), _Budget())
            now = self.clock()
            if now - budget.last < self.cfg.min_interval:
                budget.suppressed += 1
                continue
            out = msg
            if budget.suppressed:
                out = Message(msg.kind, msg.summary, f"{msg.body} ({budget.suppressed} more since the last notice)",
                              msg.urgency)
            try:
                self.send(s.uid, s.bus_path, out)
            except Exception as e:  # noqa: BLE001 - a bus fails in many ways; none may stop the worker
                self.log("notify_failed", uid=s.uid, bus=s.bus_path, error=str(e) or repr(e))
                continue
            budget.last, budget.suppressed = now, 0
            sent += 1
            self.log("notified", uid=s.uid, kind=msg.kind)
        return sent

    def recipients(self) -> list[Session]:
        """The session buses to tell: those of users with an active graphical
        session, or every one (``sessions: all``, or logind unreachable)."""
        buses = find_sessions(self.cfg.run_user_dir)
        if self.cfg.sessions == "all" or not buses:
            return buses
        try:
            uids = self.graphical(self.cfg.system_bus)
        except Exception as e:  # noqa: BLE001 - no system bus, no logind, a jeepney error: tell everyone
            if not self._fallback_told:
                self._fallback_told = True
                self.log("notify_sessions_fallback", sessions="all", system_bus=self.cfg.system_bus,
                         error=str(e) or repr(e))
            return buses
        return [b for b in buses if b.uid in uids]
