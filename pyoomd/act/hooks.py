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
"""

from __future__ import annotations

import ctypes
import os
import pwd
import queue
import stat
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError
from ..model import Decision, MemSample
from ..values import trust_problem

if TYPE_CHECKING:  # the loop never imports pyoomd.config (pydantic): see pyoomd.runtime
    from ..config import HooksConfig

PR_SET_NO_NEW_PRIVS = 38  # <linux/prctl.h>
PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL = 47, 4
# Queued post_kill runs beyond this are dropped (and logged): a kill storm
# must not fork a storm of hooks.  One kill per tick makes 16 plenty.
QUEUE_MAX = 16
# Environment a hook starts from: nothing of the daemon's own (its
# NOTIFY_SOCKET, credentials directories) leaks to a program of the admin's.
BASE_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}
KILL_EVENTS_DONE = {"victim_exited": "exited", "victim_stuck": "stuck", "kill_skipped": "skipped"}


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


def hook_env(fields: Mapping[str, Any], outcome: str | None = None) -> dict[str, str]:
    """The victim as environment variables, verbatim (only NUL is dropped:
    the kernel cannot carry it, and /proc never holds one in comm)."""
    def s(key: str) -> str:
        v = fields.get(key)
        return "" if v is None else str(v).replace("\0", " ")

    env = dict(BASE_ENV)
    env.update({
        "PYOOMD_PID": s("pid"), "PYOOMD_COMM": s("comm"), "PYOOMD_CMDLINE": s("cmdline"),
        "PYOOMD_UID": s("uid"), "PYOOMD_RSS_KIB": s("rss_kib"), "PYOOMD_SIGNAL": s("signal"),
        "PYOOMD_REASON": s("reason"), "PYOOMD_DRY_RUN": "1" if fields.get("dry_run") else "0",
    })
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


class HookRunner:
    """An observer: runs the configured hooks on kill events.

    ``log(event, **fields)`` reports hook failures and timeouts."""

    def __init__(self, cfg: HooksConfig, log: Callable[..., None], run_as: RunAs | None = None) -> None:
        self.cfg = cfg
        self.log = log
        self.run_as = run_as if run_as is not None else resolve_user(cfg)
        check_programs(cfg)  # as root: ConfigError for a hook another user could rewrite
        if cfg.pre_kill or cfg.post_kill:
            drop_inheritable_privileges()
        self._pending: dict[int, dict[str, Any]] = {}  # pid -> kill fields awaiting post_kill
        self._queue: queue.Queue[tuple[tuple[str, ...], dict[str, str]]] = queue.Queue(QUEUE_MAX)
        self._stopped = False
        self._reaper = threading.Thread(target=self._work, name="pyoomd-hooks", daemon=True)
        self._reaper.start()

    # -- observer -----------------------------------------------------------
    def on_tick(self, sample: MemSample, decision: Decision) -> None:
        pass

    def on_event(self, event: str, fields: dict[str, Any]) -> None:
        if event == "kill":
            self._on_kill(fields)
        elif event in KILL_EVENTS_DONE:
            kill = self._pending.pop(int(fields.get("pid", -1)), None)
            if kill is not None:
                self._post(kill, KILL_EVENTS_DONE[event])

    def _on_kill(self, fields: dict[str, Any]) -> None:
        if self.cfg.pre_kill:
            env = hook_env(fields)
            procs = [p for p in (self.spawn(argv, env) for argv in self.cfg.pre_kill) if p is not None]
            deadline = time.monotonic() + self.cfg.pre_kill_wait
            for p in procs:
                self._wait_bounded(p, deadline)
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
        try:
            p = subprocess.Popen(
                list(argv), env=env, stdin=subprocess.DEVNULL, close_fds=True, cwd="/",
                user=self.run_as.uid, group=self.run_as.gid,
                extra_groups=[] if self.run_as.uid is not None else None,
                start_new_session=True,  # a hook's children are killed with it on timeout
            )
        except OSError as e:
            self.log("hook_failed", hook=argv[0], error=str(e))
            return None
        threading.Thread(target=self._reap, args=(p, argv), name="pyoomd-hook-reap", daemon=True).start()
        return p

    def _wait_bounded(self, p: subprocess.Popen[bytes], deadline: float) -> None:
        try:
            p.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass  # the kill goes on; the reaper thread keeps watching the hook

    def _reap(self, p: subprocess.Popen[bytes], argv: tuple[str, ...]) -> None:
        try:
            rc = p.wait(self.cfg.timeout)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(p.pid, 9)
            except OSError:
                p.kill()
            p.wait()
            self.log("hook_timeout", hook=argv[0], pid=p.pid, timeout_s=self.cfg.timeout)
            return
        if rc != 0:
            self.log("hook_failed", hook=argv[0], pid=p.pid, returncode=rc)

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
