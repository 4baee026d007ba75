"""pre_kill and post_kill programs: an argv list, never a shell.

The victim is described in environment variables only (``PYOOMD_PID``,
``PYOOMD_COMM``, ``PYOOMD_CMDLINE``, ``PYOOMD_UID``, ``PYOOMD_RSS_KIB``,
``PYOOMD_SIGNAL``, ``PYOOMD_REASON``, ``PYOOMD_DRY_RUN``; post_kill also gets
``PYOOMD_OUTCOME``; earlyoom's ``EARLYOOM_PID``, ``EARLYOOM_NAME``,
``EARLYOOM_CMDLINE``, ``EARLYOOM_UID`` are set too): a process name is chosen by whoever started the process
and may hold ``$(...)``, quotes or newlines, so it is never put in an argv or
a command line.  A hook that passes it to a shell must quote it itself.

pre_kill runs when the victim is chosen, just before the first signal; the
kill waits for it at most ``pre_kill_wait`` (earlyoom's 200 ms) and goes on
whatever it returns: a hook cannot veto a kill.  post_kill runs once the
victim has exited (or is stuck, or, in dry-run, at once).  A hook still
running after ``timeout`` is SIGKILLed.

Privileges: when pyoomd runs as root, hooks run as ``hooks.user`` (default
``nobody``) with no supplementary groups: setuid() from root to another uid
clears every capability, and ``PR_SET_NO_NEW_PRIVS`` (set on the daemon once,
as systemd's ``NoNewPrivileges=`` would, and inherited) stops a setuid
binary from getting them back.  Ambient capabilities are cleared too, so a
non-root daemon given capabilities by its unit does not pass them on.  This
is done with setuid in the child (subprocess's ``user=``), not with a
``preexec_fn``, which is unsafe in a process with threads.

Hostile victims: every variable is bounded to ``ENV_MAX_BYTES`` (32 KiB)
after encoding, cut at a character boundary, and ``PYOOMD_<NAME>_TRUNCATED=1``
says so: a 64 KiB cmdline of ``\xff`` bytes decodes to 192 KiB of U+FFFD,
beyond the kernel's 128 KiB per string (execve would fail with E2BIG and no
hook would run).  A hook's stdout and stderr are pipes the reaper reads,
at most ``OUTPUT_MAX_BYTES`` of each kept, and logged as fields of one
``hook_output`` event: a hook echoing ``$PYOOMD_CMDLINE`` cannot forge a line
of the daemon's log.

Reaping: where the daemon's own cgroup v2 directory is writable (root, or a
delegated subtree), each hook runs in a cgroup of its own below it
(``pyoomd-hook.PID.RANDOM.N``): the hook starts through a small trampoline (this
Python, ``-I -S``, ~10 ms more per hook) that joins that cgroup, drops to the hook user
(no supplementary groups) and execs the program, so nothing it forks is
ever outside.  At the timeout
the whole cgroup is killed (``cgroup.kill``, or every member, frozen first,
where the kernel predates 5.14), children that left the session with
``setsid`` included, and the cgroup removed.  Elsewhere the hook's process
group is killed, as before: a child that called ``setsid`` (or
``setpgid``) is then not reaped (``HookRunner.reaping`` says which).
"""

from __future__ import annotations

import ctypes
import itertools
import os
import pwd
import queue
import selectors
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError
from ..model import Decision, MemSample
from ..settings.trust import trust_problem

if TYPE_CHECKING:  # annotations only
    from ..settings.schema import HooksConfig

PR_SET_NO_NEW_PRIVS = 38  # <linux/prctl.h>
PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL = 47, 4
# Queued post_kill runs beyond this are dropped (and logged): a kill storm
# must not fork a storm of hooks.  One kill per tick makes 16 plenty.
QUEUE_MAX = 16
# Environment a hook starts from: nothing of the daemon's own (its
# NOTIFY_SOCKET, credentials directories) leaks to a program of the admin's.
BASE_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}
KILL_EVENTS_DONE = {"victim_exited": "exited", "victim_stuck": "stuck", "kill_skipped": "skipped"}
# Each environment variable's value at most this many bytes once encoded (the
# kernel's MAX_ARG_STRLEN is 128 KiB per "NAME=value" string; all of them
# together must also fit in a quarter of the stack limit, 2 MiB by default).
ENV_MAX_BYTES = 32 * 1024
# Of a hook's stdout and of its stderr, this much is kept for hook_output;
# the rest is read and counted (the hook never blocks on a full pipe).
OUTPUT_MAX_BYTES = 4096
# After the hook's own process exits, its output pipes are read this much
# longer (a background child may hold them open; it is not waited for).
OUTPUT_LINGER_S = 0.2
# The trampoline, run as the daemon's user: join the hook's cgroup (argv[1]),
# drop to the hook's uid/gid (argv[2], argv[3]; "-" keeps ours) with no
# supplementary groups, as subprocess's user=/group=/extra_groups= do, then
# exec the hook (argv[4:]).  One thread, nothing imported but os and sys.
_TRAMPOLINE = """import os, sys
cg, uid, gid, argv = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
try:
    with open(cg + "/cgroup.procs", "w") as f:
        f.write(str(os.getpid()))
except OSError as e:
    os.write(2, ("pyoomd hook: not in its cgroup: %s\\n" % e).encode())
if gid != "-":
    os.setgroups([])
    os.setresgid(int(gid), int(gid), int(gid))
if uid != "-":
    os.setresuid(int(uid), int(uid), int(uid))
try:
    os.execv(argv[0], argv)
except OSError as e:
    os.write(2, ("pyoomd hook: cannot exec %s: %s\\n" % (argv[0], e.strerror)).encode())
    os._exit(127)
"""


@dataclass(frozen=True, slots=True)
class RunAs:
    """Who hooks run as: None fields keep the daemon's own."""

    uid: int | None = None
    gid: int | None = None
    name: str = ""


def resolve_user(cfg: HooksConfig, euid: int | None = None) -> RunAs:
    """As root: the configured user (KeyError if unknown).  Otherwise our own."""
    euid = os.geteuid() if euid is None else euid
    if euid != 0:
        return RunAs()
    pw = pwd.getpwnam(cfg.user)
    return RunAs(pw.pw_uid, pw.pw_gid, cfg.user)


def check_programs(cfg: HooksConfig, euid: int | None = None) -> None:
    """As root, refuse a hook program (or its directory) that another user
    owns or can write: they could make root run their code at every kill
    (the care sudo takes with sudoers; a sticky directory like /tmp is fine
    for a root-owned file)."""
    euid = os.geteuid() if euid is None else euid
    for argv in (*cfg.pre_kill, *cfg.post_kill):
        path = argv[0]
        try:
            st, dst = os.stat(path), os.stat(os.path.dirname(path) or "/")
        except OSError:
            continue  # missing: each run logs hook_failed (a hook never vetoes a kill)
        problem = trust_problem(st, euid)
        if problem is None and not dst.st_mode & stat.S_ISVTX:
            problem = trust_problem(dst, euid)
        if problem:
            raise ConfigError(path, f"hook program refused: {problem}")


def bound_text(text: str, limit: int = ENV_MAX_BYTES) -> tuple[str, bool]:
    """``text`` cut to at most ``limit`` bytes as the environment encodes it
    (UTF-8, surrogateescape), at a character boundary; and whether it was."""
    try:
        raw = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a lone surrogate no environment can carry: "?"
        raw = text.encode("utf-8", "replace")
        text = raw.decode("utf-8", "surrogateescape")
    if len(raw) <= limit:
        return text, False
    # a byte-exact prefix: raw bytes (surrogateescape) stay the bytes they were
    return raw[:limit].decode("utf-8", "surrogateescape"), True


def hook_env(fields: Mapping[str, Any], outcome: str | None = None) -> dict[str, str]:
    """The victim as environment variables, verbatim (only NUL is dropped:
    the kernel cannot carry it, and /proc never holds one in comm), each
    bounded to ``ENV_MAX_BYTES`` with ``PYOOMD_<NAME>_TRUNCATED=1`` beside a
    cut one."""
    env = dict(BASE_ENV)
    for name, key in (("PID", "pid"), ("COMM", "comm"), ("CMDLINE", "cmdline"), ("UID", "uid"),
                      ("RSS_KIB", "rss_kib"), ("SIGNAL", "signal"), ("REASON", "reason")):
        v = fields.get(key)
        value, cut = bound_text("" if v is None else str(v).replace("\0", " "))
        env[f"PYOOMD_{name}"] = value
        if cut:
            env[f"PYOOMD_{name}_TRUNCATED"] = "1"
    env["PYOOMD_DRY_RUN"] = "1" if fields.get("dry_run") else "0"
    # earlyoom's names, so its -N/-P scripts work unchanged.
    env.update({"EARLYOOM_PID": env["PYOOMD_PID"], "EARLYOOM_NAME": env["PYOOMD_COMM"],
                "EARLYOOM_CMDLINE": env["PYOOMD_CMDLINE"], "EARLYOOM_UID": env["PYOOMD_UID"]})
    if outcome is not None:
        env["PYOOMD_OUTCOME"] = outcome
    return env


def drop_inheritable_privileges() -> None:
    """no_new_privs and no ambient capabilities, for us and so our children.
    Best effort: where prctl is unavailable, setuid alone still drops caps."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:
        return
    libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
    libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)


def own_cgroup2_dir(proc_self: str = "/proc/self") -> str | None:
    """The directory of this process's cgroup v2 (unified) cgroup, or None
    (no v2 hierarchy mounted, or not visible)."""
    try:
        with open(f"{proc_self}/cgroup", encoding="utf-8", errors="replace") as f:
            rel = next((line[3:].strip() for line in f if line.startswith("0::")), None)
        with open(f"{proc_self}/mountinfo", encoding="utf-8", errors="replace") as f:
            mounts = [line.split() for line in f]
    except OSError:
        return None
    if rel is None:
        return None
    for fields in mounts:
        try:
            sep = fields.index("-")
        except ValueError:
            continue
        if fields[sep + 1] == "cgroup2" and fields[3] == "/":
            path = os.path.join(fields[4], rel.lstrip("/"))
            return path if os.path.isfile(os.path.join(path, "cgroup.procs")) else None
    return None


_LIVE: set[str] = set()  # hook cgroups not yet removed (any runner): killed and removed at exit
_LIVE_LOCK = threading.Lock()


def _remove_live_cgroups() -> None:
    """At interpreter exit (the daemon's shutdown): hooks still running would
    lose their reaper threads and leave their cgroups behind."""
    with _LIVE_LOCK:
        paths = list(_LIVE)
    for path in paths:
        cg = HookCgroups(os.path.dirname(path))
        cg.kill(path)
        cg.remove(path)


class HookCgroups:
    """One cgroup v2 per hook, below the daemon's own: created, joined by
    the hook before it execs, killed whole at the timeout, removed (and at
    exit, those still there)."""

    _seq = itertools.count(1)
    _atexit = False

    def __init__(self, base: str) -> None:
        self.base = base
        # pids repeat across PID namespaces (a daemon in a container is pid
        # 1 or 2 there): a random part keeps two daemons' names apart.
        self.token = os.urandom(4).hex()
        if not HookCgroups._atexit:
            import atexit

            atexit.register(_remove_live_cgroups)
            HookCgroups._atexit = True

    @classmethod
    def probe(cls, base: str | None = None) -> HookCgroups | None:
        """Usable only if a child cgroup can be created here (root or a delegated subtree)."""
        base = own_cgroup2_dir() if base is None else base
        if base is None:
            return None
        cg = cls(base)
        try:
            path = cg.create()
        except OSError:
            return None
        cg.remove(path)
        return cg

    def create(self) -> str:
        path = os.path.join(self.base, f"pyoomd-hook.{os.getpid()}.{self.token}.{next(self._seq)}")
        os.mkdir(path, 0o755)
        with _LIVE_LOCK:
            _LIVE.add(path)
        return path

    def join(self, path: str, pid: int) -> None:
        with open(os.path.join(path, "cgroup.procs"), "w") as f:
            f.write(str(pid))

    def pids(self, path: str) -> list[int]:
        try:
            with open(os.path.join(path, "cgroup.procs")) as f:
                return [int(x) for x in f.read().split()]
        except OSError:
            return []

    def kill(self, path: str) -> int:
        """SIGKILL everything in the cgroup; how many there were."""
        left = self.pids(path)
        if not left:
            return 0
        if os.getpid() in left:  # never: the daemon only ever moves its hook's pid here
            return 0
        try:
            with open(os.path.join(path, "cgroup.kill"), "w") as f:
                f.write("1")
            return len(left)
        except OSError:
            pass  # before Linux 5.14: freeze, kill each member, thaw
        self._write(path, "cgroup.freeze", "1")
        for _ in range(10):
            pids = self.pids(path)
            if not pids:
                break
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
            self._write(path, "cgroup.freeze", "0")
            time.sleep(0.01)
        return len(left)

    def remove(self, path: str, wait_s: float = 1.0) -> str | None:
        """rmdir once empty (the killed die asynchronously); the error if it
        is still there after ``wait_s`` (a member stuck in the kernel)."""
        deadline = time.monotonic() + wait_s
        while True:
            try:
                os.rmdir(path)
                with _LIVE_LOCK:
                    _LIVE.discard(path)
                return None
            except FileNotFoundError:
                with _LIVE_LOCK:
                    _LIVE.discard(path)
                return None
            except OSError as e:
                if time.monotonic() >= deadline:
                    return str(e)
                time.sleep(0.01)

    @staticmethod
    def _write(path: str, name: str, value: str) -> None:
        try:
            with open(os.path.join(path, name), "w") as f:
                f.write(value)
        except OSError:
            pass


class HookRunner:
    """An observer: runs the configured hooks on kill events.

    ``log(event, **fields)`` reports hook failures and timeouts."""

    def __init__(self, cfg: HooksConfig, log: Callable[..., None], run_as: RunAs | None = None,
                 cgroups: HookCgroups | None = None) -> None:
        self.cfg = cfg
        self.log = log
        self.run_as = run_as if run_as is not None else resolve_user(cfg)
        check_programs(cfg)  # as root: ConfigError for a hook another user could rewrite
        if cfg.pre_kill or cfg.post_kill:
            drop_inheritable_privileges()
        # One cgroup per hook where we may create them; else process groups.
        self.cgroups = cgroups if cgroups is not None else (
            HookCgroups.probe() if (cfg.pre_kill or cfg.post_kill) else None)
        self.reaping = f"cgroup below {self.cgroups.base}" if self.cgroups else "process group"
        self._pending: dict[int, dict[str, Any]] = {}  # pid -> kill fields awaiting post_kill
        self._queue: queue.Queue[tuple[tuple[str, ...], dict[str, str]]] = queue.Queue(QUEUE_MAX)
        self._stopped = False
        self._reaper = threading.Thread(target=self._work, name="pyoomd-hooks", daemon=True)
        self._reaper.start()

    # -- observer -----------------------------------------------------------
    def on_tick(self, sample: MemSample, decision: Decision) -> None:
        pass

    def on_event(self, event: str, fields: dict[str, Any]) -> None:
        """Never blocks: a kill is only noted for post_kill (pre_kill is the
        act stage's own step, ``pre_kill``)."""
        if event == "kill":
            self._on_kill(fields)
        elif event in KILL_EVENTS_DONE:
            kill = self._pending.pop(int(fields.get("pid", -1)), None)
            if kill is not None:
                self._post(kill, KILL_EVENTS_DONE[event])

    # -- the act stage's pre-kill step --------------------------------------
    def pre_kill(self, fields: dict[str, Any]) -> None:
        """Run the pre_kill hooks for the victim the ``kill`` event describes
        and wait for them at most ``pre_kill_wait``: the act stage calls this
        just before the first signal (Daemon.pre_kill)."""
        if self.cfg.pre_kill:
            env = hook_env(fields)
            procs = [p for p in (self.spawn(argv, env) for argv in self.cfg.pre_kill) if p is not None]
            deadline = time.monotonic() + self.cfg.pre_kill_wait
            for p in procs:
                self._wait_bounded(p, deadline)

    def _on_kill(self, fields: dict[str, Any]) -> None:
        if self.cfg.post_kill:
            if fields.get("dry_run"):
                self._post(fields, "dry_run")
            else:
                self._pending[int(fields["pid"])] = dict(fields)

    def _post(self, fields: Mapping[str, Any], outcome: str) -> None:
        env = hook_env(fields, outcome)
        for argv in self.cfg.post_kill:
            try:
                self._queue.put_nowait((argv, env))
            except queue.Full:
                self.log("hook_dropped", hook=argv[0], reason="queue full")

    # -- processes ----------------------------------------------------------
    def spawn(self, argv: tuple[str, ...], env: dict[str, str]) -> subprocess.Popen[bytes] | None:
        """Start one hook; None (logged) if it cannot start."""
        cgroup = None
        if self.cgroups is not None:
            try:
                cgroup = self.cgroups.create()
            except OSError as e:
                self.log("hook_cgroup_failed", hook=argv[0], error=str(e))
        run_as: dict[str, Any] = {"user": self.run_as.uid, "group": self.run_as.gid,
                                  "extra_groups": [] if self.run_as.uid is not None else None}
        try:
            if cgroup is not None:
                if not os.access(argv[0], os.X_OK):  # the trampoline would say so later, less clearly
                    raise FileNotFoundError(2, "not an executable file", argv[0])
                ids = ["-" if v is None else str(v) for v in (self.run_as.uid, self.run_as.gid)]
                cmd = [sys.executable, "-I", "-S", "-c", _TRAMPOLINE, cgroup, *ids, *argv]
                run_as = {}  # the trampoline drops them, once in the cgroup
            else:
                cmd = list(argv)
            p = subprocess.Popen(
                cmd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                close_fds=True, cwd="/", **run_as,
                start_new_session=True,  # a hook's children are killed with it on timeout
            )
        except (OSError, ValueError) as e:  # ValueError: an environment execve cannot take
            self.log("hook_failed", hook=argv[0], error=getattr(e, "strerror", None) or str(e))
            if cgroup is not None:
                assert self.cgroups is not None
                self.cgroups.remove(cgroup)
            return None
        threading.Thread(target=self._reap, args=(p, argv, cgroup), name="pyoomd-hook-reap", daemon=True).start()
        return p

    def _wait_bounded(self, p: subprocess.Popen[bytes], deadline: float) -> None:
        try:
            p.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass  # the kill goes on; the reaper thread keeps watching the hook

    def _reap(self, p: subprocess.Popen[bytes], argv: tuple[str, ...], cgroup: str | None = None) -> None:
        """Read the hook's output (bounded), wait for it until the timeout,
        kill it (its cgroup, else its process group) then; log the outcome."""
        deadline = time.monotonic() + self.cfg.timeout
        out = _Capture(p)
        timed_out = False
        killed = 0
        rc = None
        while rc is None:
            out.read_until(min(deadline, time.monotonic() + 0.05))
            rc = p.poll()
            if rc is None and time.monotonic() >= deadline:
                timed_out = True
                killed = self._kill(p, cgroup)
                rc = p.wait()
        out.read_until(time.monotonic() + OUTPUT_LINGER_S, until_eof=True)
        out.close()
        # What the hook said and how it ended, at once (not after its children).
        out.log(self.log, argv[0], p.pid)
        if timed_out and cgroup is None:
            self.log("hook_timeout", hook=argv[0], pid=p.pid, timeout_s=self.cfg.timeout)
        if rc != 0 and not timed_out:
            self.log("hook_failed", hook=argv[0], pid=p.pid, returncode=rc)
        if cgroup is None:
            return
        assert self.cgroups is not None
        # Children may go on after the hook exits, until its timeout.
        while self.cgroups.pids(cgroup) and time.monotonic() < deadline:
            time.sleep(0.05)
        left = self.cgroups.kill(cgroup)
        error = self.cgroups.remove(cgroup)
        if error:
            self.log("hook_cgroup_failed", hook=argv[0], pid=p.pid, cgroup=cgroup, error=error,
                     left=len(self.cgroups.pids(cgroup)))
        children = max(0, killed - 1) + left  # besides the hook's own process
        if timed_out or left:
            self.log("hook_timeout", hook=argv[0], pid=p.pid, timeout_s=self.cfg.timeout, children_killed=children)

    def _kill(self, p: subprocess.Popen[bytes], cgroup: str | None) -> int:
        """SIGKILL the hook; how many its cgroup held (0 without one)."""
        killed = 0
        if cgroup is not None:
            assert self.cgroups is not None
            killed = self.cgroups.kill(cgroup)
        try:
            os.killpg(p.pid, 9)
        except OSError:
            p.kill()
        return killed

    def stop(self) -> None:
        """End the worker (a reload replaced this runner); hooks already
        started finish under their reaper threads."""
        self._stopped = True
        try:
            self._queue.put_nowait(None)  # type: ignore[arg-type]
        except queue.Full:
            pass  # the worker sees _stopped after the hook it is starting

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None or self._stopped:
                return
            self.spawn(*item)


class _Capture:
    """A hook's stdout and stderr, read without blocking; the first
    ``OUTPUT_MAX_BYTES`` of each kept, the rest counted."""

    def __init__(self, p: subprocess.Popen[bytes]) -> None:
        self.sel = selectors.DefaultSelector()
        self.kept: dict[str, bytearray] = {}
        self.total: dict[str, int] = {}
        for name, pipe in (("stdout", p.stdout), ("stderr", p.stderr)):
            if pipe is not None:
                os.set_blocking(pipe.fileno(), False)
                self.sel.register(pipe, selectors.EVENT_READ, name)
                self.kept[name], self.total[name] = bytearray(), 0

    def read_until(self, deadline: float, until_eof: bool = False) -> None:
        if not self.sel.get_map() and not until_eof:  # both closed: just wait (no busy loop)
            time.sleep(max(0.0, deadline - time.monotonic()))
        while self.sel.get_map():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            ready = self.sel.select(left)
            for key, _ in ready:
                try:
                    data = os.read(key.fd, 65536)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                if not data:
                    self.sel.unregister(key.fileobj)
                    key.fileobj.close()  # type: ignore[union-attr]
                    continue
                name = key.data
                room = OUTPUT_MAX_BYTES - len(self.kept[name])
                if room > 0:
                    self.kept[name] += data[:room]
                self.total[name] += len(data)
            if ready and not until_eof:
                return

    def close(self) -> None:
        for key in list(self.sel.get_map().values()):
            self.sel.unregister(key.fileobj)
            key.fileobj.close()  # type: ignore[union-attr]
        self.sel.close()

    def log(self, log: Callable[..., None], hook: str, pid: int) -> None:
        if not any(self.total.values()):
            return
        fields: dict[str, Any] = {}
        for name, kept in self.kept.items():
            if self.total[name]:
                fields[name] = kept.decode("utf-8", "replace")
                fields[f"{name}_bytes"] = self.total[name]
                if self.total[name] > len(kept):
                    fields[f"{name}_truncated"] = True
        log("hook_output", hook=hook, pid=pid, **fields)
