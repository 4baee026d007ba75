"""``pyoomd run``: the long-running loop, kept light.

The loop process never imports argparse, pydantic, YAML, structlog or
psutil (together ~30 MiB of RSS that would stay for the daemon's lifetime,
locked by mlockall; psutil comes only with the first read of a likely
victim's USS during an approach to TERM, sense/facts.py).  Validation runs in a short-lived child,
``pyoomd.cli.compile_child``, started with the same argv at start-up and on SIGHUP; it
hands back a compiled plan (``pyoomd.settings.plan``) as JSON on a pipe.

At start-up the child shares our stdout and stderr, so ``--help``, a bad
flag (exit 2) or an invalid config (exit 78, ``file:line: message``) look
exactly as they did in-process, and its exit status is ours.  On SIGHUP its
stderr is captured instead: a failure becomes a ``reload_failed`` event
with the child's error, and the running plan stays in force.
"""

from __future__ import annotations

import json
import os
import select
import signal
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from ..errors import EXIT_FAILURE, EXIT_OK, EXIT_OSFILE, ConfigError, ParseError, StartupError, exit_code_of
from ..policy.rules import loaded_from_plan
from ..sense.procfs import Procfs
from ..sense.sample import Sampler
from ..settings.plan import PLAN_VERSION, settings_from_plan

# The fd the compile child writes its plan to (the pipe is dup2'd there).
PLAN_FD = 3
# A reload's compile child is killed after this long (a hung NFS policy dir
# must not stop the killer; start-up: STARTUP_TIMEOUT_S).  Measured
# here: a reload's child takes ~0.19 s (interpreter, pydantic, YAML); it is
# waited for in a thread (Daemon._start_reload), the loop goes on meanwhile.
RELOAD_TIMEOUT_S = 30.0
# The start-up compile child too: a policy or config path that blocks (a
# hung network filesystem; FIFOs and devices are refused before they are
# opened) must not leave the daemon never starting, silently.  Start-up
# compiles take ~0.2-0.5 s here; a slow boot gets 60.
STARTUP_TIMEOUT_S = 60.0
_CHILD = ("import json, os, sys\n"
          "p = os.environ.pop('PYOOMD_COMPILE_PATH', None)\n"
          "if p is not None: sys.path[:] = json.loads(p)\n"
          "from pyoomd.cli.compile_child import main\n"
          "sys.exit(main(sys.argv[1:]))\n")


class CompileFailed(Exception):
    """The compile child exited non-zero (its message went to stderr)."""

    def __init__(self, exit_code: int, error: ConfigError) -> None:
        self.exit_code = exit_code
        self.error = error
        super().__init__(str(error))


def _interpreter_flags() -> list[str]:
    f = sys.flags
    return [flag for flag, on in (("-I", f.isolated), ("-E", f.ignore_environment and not f.isolated),
                                  ("-s", f.no_user_site and not f.isolated), ("-S", f.no_site)) if on]


def _high_fd(fd: int) -> int:
    """``fd`` moved above the standard ones and PLAN_FD (so dup2 onto them
    clears close-on-exec), still close-on-exec itself."""
    import fcntl

    if fd > PLAN_FD:
        return fd
    new = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, PLAN_FD + 1)
    os.close(fd)
    return new


def compile_plan(argv: Sequence[str], capture_stderr: bool, timeout_s: float | None = None,
                 what: str = "<reload>") -> dict[str, Any] | None:
    """Run ``pyoomd.cli.compile_child`` on ``argv``: the plan, or None when the child
    printed something else and exited 0 (``--help``, ``--version``).
    Raises CompileFailed (non-zero exit; ConfigError inside)."""
    r, w = os.pipe()
    w = _high_fd(w)
    er = ew = -1
    actions: list[tuple[Any, ...]] = [(os.POSIX_SPAWN_DUP2, w, PLAN_FD)]
    if capture_stderr:
        er, ew = os.pipe()
        ew = _high_fd(ew)
        actions.append((os.POSIX_SPAWN_DUP2, ew, 2))
    # The child imports the same pyoomd and libraries as this process, however it was started.
    env = dict(os.environ, PYOOMD_COMPILE_PATH=json.dumps(sys.path))
    cmd = [sys.executable, *_interpreter_flags(), "-c", _CHILD, "--plan-fd", str(PLAN_FD), *argv]
    try:
        pid = os.posix_spawn(sys.executable, cmd, env, file_actions=actions)
    except OSError as e:
        for fd in (r, w, er, ew):
            if fd >= 0:
                os.close(fd)
        raise CompileFailed(EXIT_FAILURE, ConfigError("<reload>", f"cannot start {sys.executable}: {e}")) from None
    os.close(w)
    if ew >= 0:
        os.close(ew)
    outputs, timed_out = _read_until_eof([r] + ([er] if er >= 0 else []), timeout_s)
    if timed_out:
        os.kill(pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    out = outputs[r].decode("utf-8", "replace")
    err = outputs[er].decode("utf-8", "replace").strip() if er >= 0 else ""
    if timed_out:
        raise CompileFailed(EXIT_FAILURE, ConfigError(what, f"the configuration check took over {timeout_s:g}s "
                                                      "and was killed"))
    doc: dict[str, Any] | None = None
    if out.strip():
        try:
            doc = json.loads(out)
        except ValueError:
            doc = None
    if code != 0:
        failure = (doc or {}).get("error")
        if failure is not None:
            raise CompileFailed(code, ConfigError(failure["file"], failure["message"], failure["line"],
                                                  failure["column"]))
        why = f"killed by signal {-code}" if code < 0 else f"exit status {code}"
        raise CompileFailed(code if code > 0 else EXIT_FAILURE,
                            ConfigError("<reload>", f"the configuration check failed ({why})"
                                        + (f": {err[-2000:]}" if err else "")))
    if doc is None:
        return None
    if doc.get("plan") != PLAN_VERSION:
        raise CompileFailed(EXIT_FAILURE, ConfigError("<reload>", f"unexpected plan version {doc.get('plan')!r}"))
    return doc


def _read_until_eof(fds: list[int], timeout_s: float | None) -> tuple[dict[int, bytes], bool]:
    """Everything written to ``fds`` until each is closed; (data, timed out)."""
    chunks: dict[int, list[bytes]] = {fd: [] for fd in fds}
    poller = select.poll()
    for fd in fds:
        poller.register(fd, select.POLLIN)
    open_fds = set(fds)
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    timed_out = False
    try:
        while open_fds:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                timed_out = True
                break
            for fd, _ in poller.poll(None if left is None else max(1, int(left * 1000))):
                data = os.read(fd, 65536)
                if data:
                    chunks[fd].append(data)
                else:
                    poller.unregister(fd)
                    open_fds.discard(fd)
    finally:
        for fd in fds:
            os.close(fd)
    return {fd: b"".join(c) for fd, c in chunks.items()}, timed_out


def open_sampler(procfs: Procfs, reader: str) -> Sampler:
    try:
        sampler = Sampler(procfs, reader)
        sampler.read()
    except (OSError, ParseError) as e:
        raise StartupError(f"cannot read {procfs.meminfo}: {e}", EXIT_OSFILE) from None
    return sampler


def serve(plan: dict[str, Any], recompile: Callable[[], dict[str, Any]]) -> int:
    """Build the daemon from ``plan`` and run it until SIGTERM/SIGINT.
    ``recompile`` gives a fresh plan on SIGHUP (ConfigError if invalid)."""
    daemon, stops = build(plan, recompile)
    try:
        daemon.run()
    finally:
        for stop in stops:
            stop()
    return EXIT_OK


def build(plan: dict[str, Any], recompile: Callable[[], dict[str, Any]]) -> tuple[Any, list[Callable[[], None]]]:
    """The daemon for ``plan``, its observers attached; and their stop functions."""
    from ..report.log import configure, get_logger, install_excepthooks
    from .core import Daemon

    settings = settings_from_plan(plan["settings"])
    loaded = loaded_from_plan(plan["policy"])
    configure(settings.log_format)
    install_excepthooks()  # a thread's traceback is a JSON event too, never raw text
    procfs = Procfs(plan["procfs"])
    sampler = open_sampler(procfs, settings.reader)
    wake = settings.psi.wakeup
    waiter = None
    if wake.enabled:
        from ..sense.psi import open_waiter

        waiter = open_waiter(procfs, wake.kind, wake.stall, wake.window)
    rec_cfg = getattr(settings, "recorder", None)  # absent from plans of older versions
    ring = None
    if rec_cfg is not None and rec_cfg.enabled:
        from ..report import recorder

        ring, procfs, recording = recorder.recording(procfs, sampler, rec_cfg)
        sampler = recording  # type: ignore[assignment]  # the Sampler's face, pass-through
    daemon = Daemon(settings, procfs, sampler, get_logger(), waiter=waiter)
    daemon.use_policies(loaded)
    stops: list[Callable[[], None]] = []
    if ring is not None:
        rec = recorder.attach(daemon, ring, rec_cfg, lambda: trace_header(daemon, plan["procfs"]))
        stops.append(rec.stop)
        try:  # SIGUSR1: write the ring now (`pyoomd status --dump-trace FILE`)
            signal.signal(signal.SIGUSR1, lambda signum, frame: rec.request_dump())
        except ValueError:  # not the main thread (tests): no signal, no dump on request
            pass
    fresh: dict[str, Any] = {}

    def reloader() -> Any:  # SIGHUP: the same argv, checked again by a new child
        new = recompile()
        fresh["policy"] = new["policy"]
        return settings_from_plan(new["settings"])

    daemon.reloader = reloader
    daemon.policy_loader = lambda s: loaded_from_plan(fresh.pop("policy"))
    from ..report.sdnotify import observer_for

    sd = observer_for(settings, daemon.last_sample)  # None unless started by systemd
    if sd is not None:
        daemon.observers.append(sd)
    from ..report.reporters import attach

    return daemon, stops + attach(daemon, settings, list(plan["config_files"]))


def trace_header(daemon: Any, procfs_root: str) -> dict[str, Any]:
    """What a trace says about the daemon that recorded it (trace.py): the
    plan in force, its levels, and whom it never kills (itself, its parent)."""
    import dataclasses

    from ..policy.rules import loaded_to_plan
    from ..sense.snapshot import default_skip
    from ..settings.plan import settings_to_plan
    from ..trace import make_header

    policy = loaded_to_plan(daemon.policy_loaded) if daemon.policy_loaded is not None else None
    return make_header(settings_to_plan(daemon.settings), policy, procfs=procfs_root,
                       thresholds=dataclasses.asdict(daemon.thresholds), reader=daemon.sampler.backend,
                       skip=sorted(default_skip(daemon.procfs)), pid=os.getpid())


def main(argv: Sequence[str]) -> int:
    """``pyoomd [GLOBAL OPTIONS] run ...`` (argv without the program name)."""
    argv = list(argv)
    try:
        plan = compile_plan(argv, capture_stderr=False, timeout_s=STARTUP_TIMEOUT_S, what="<startup>")
    except CompileFailed as e:
        if e.exit_code == EXIT_FAILURE:  # the child could not say it: we do
            sys.stderr.write(f"pyoomd: {e}\n")
        return e.exit_code
    if plan is None:
        return EXIT_OK  # --help or --version, printed by the child

    def recompile() -> dict[str, Any]:
        try:
            new = compile_plan(argv, capture_stderr=True, timeout_s=RELOAD_TIMEOUT_S)
        except CompileFailed as e:
            raise e.error from None
        if new is None:
            raise ConfigError("<reload>", "the configuration check printed no plan")
        return new

    return exit_code_of(lambda: serve(plan, recompile))
