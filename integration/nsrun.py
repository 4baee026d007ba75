"""Runs one kill scenario as PID 1 of a private PID namespace.

Started by integration/harness.py through
``unshare --pid --fork --mount-proc python nsrun.py SPEC_JSON``.  Inside, /proc
shows only the scenario's processes, so the daemon can kill nothing else; when
this process exits the kernel kills everything left in the namespace.

It starts the bystanders, the daemon (thresholds relative to the MemAvailable
it finds, so the machine's other work is never near them), then the hogs; it
samples MemAvailable every ~2 ms as an independent witness of overshoot, and
prints one JSON result on stdout.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
WITNESS_STEP_S = 0.002  # the independent sampler's period
# Renamed interpreters for "comm": symlinks (exe still says python) and, with
# "hardlink", hard links (exe says this path).  Shared by scenarios, which run
# one at a time.
SYMLINK_DIR = "/tmp/pyoomd-it-comm"
HARDLINK_DIR = "/tmp/pyoomd-it-exe"
SYSTEM_PYTHON = "/usr/bin/python3"


def mem_available_kib() -> int:
    with open("/proc/meminfo", "rb") as f:
        for line in f:
            if line.startswith(b"MemAvailable:"):
                return int(line.split()[1])
    raise RuntimeError("no MemAvailable")


# spec "pgroup" name -> the pid leading that process group
PGROUPS: dict[str, int] = {}


def start_proc(spec: dict[str, Any]) -> subprocess.Popen[bytes]:
    """A hog or bystander; ``comm`` renames it by exec through a symlink."""
    argv = [sys.executable, os.path.join(HERE, "hog.py"), "--rate", str(spec.get("rate", 256)),
            "--max", str(spec.get("max", 512)), "--start", str(spec.get("start", 0)),
            "--hold", str(spec.get("hold", 60)), "--delay", str(spec.get("delay", 0))]
    if spec.get("ignore_term"):
        argv.append("--ignore-term")
    if spec.get("free_on_usr1"):
        argv.append("--free-on-usr1")
    if spec.get("free_on_lowmem"):
        argv += ["--free-on-lowmem", spec["free_on_lowmem"]]
    if spec.get("go_file"):
        argv += ["--go-file", spec["go_file"]]
    exe = sys.executable
    if spec.get("comm"):
        exe = exe_named(spec["comm"], bool(spec.get("hardlink")))
    if spec.get("argv0"):  # a command line its owner chose (the program is still exe)
        argv[0] = spec["argv0"]
    kw: dict[str, Any] = {}
    if spec.get("pgroup"):  # a process group of its own: the first of that name leads it
        kw["process_group"] = PGROUPS.get(spec["pgroup"], 0)
    out = open(spec["stdout"], "ab") if spec.get("stdout") else None  # noqa: SIM115 - the child keeps it
    uid = spec.get("user")
    if uid is not None:  # our interpreter may sit in /root (0700): the system one (hog.py needs only the stdlib)
        exe = system_python_named(spec["comm"]) if spec.get("comm") else SYSTEM_PYTHON
        if not spec.get("argv0"):
            argv[0] = exe
        kw.update(user=uid, group=uid, extra_groups=[], cwd="/")
    p = subprocess.Popen(argv, executable=exe, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, **kw)
    if spec.get("pgroup"):
        PGROUPS.setdefault(spec["pgroup"], p.pid)
    if out is not None:  # after "ready", the rest of the hog's stdout goes to that file
        threading.Thread(target=_copy_rest, args=(p, out), daemon=True).start()
    if spec.get("in_cgroup"):
        join_cgroup(spec.get("cgroup_procs"), p.pid)
    if spec.get("in_memcg"):
        join_cgroup(spec.get("memcg_procs"), p.pid)
    assert p.stdout is not None
    if out is None:
        p.stdout.readline()  # "ready": its start allocation is done
    else:
        _wait_ready(spec["stdout"])
    if spec.get("adj") is not None:
        set_adj(p.pid, int(spec["adj"]))
    return p


def _copy_rest(p: subprocess.Popen[bytes], out: Any) -> None:
    assert p.stdout is not None
    for line in p.stdout:
        out.write(line)
        out.flush()
    out.close()


def _wait_ready(path: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with open(path, "rb") as f:
            if b"ready" in f.read():
                return
        time.sleep(0.005)
    raise RuntimeError(f"hog writing to {path} never said ready")


def join_cgroup(procs_file: str | None, pid: int) -> None:
    """Move one child we just started into the scenario's v2 cgroup."""
    assert procs_file, "in_cgroup needs spec v2_cgroup"
    with open(procs_file, "w") as f:
        f.write(str(pid))


def own_v2_cgroup_dir() -> str:
    """Our own cgroup v2 directory (hybrid: below /sys/fs/cgroup/unified)."""
    with open("/proc/self/cgroup") as f:
        path = next(line.rstrip("\n")[3:] for line in f if line.startswith("0::"))
    base = "/sys/fs/cgroup/unified" if os.path.isdir("/sys/fs/cgroup/unified") else "/sys/fs/cgroup"
    return os.path.join(base, path.lstrip("/")).rstrip("/")


def make_v2_cgroup(spec: dict[str, Any]) -> None:
    """spec["v2_cgroup"]: create a child v2 cgroup of our own (never elsewhere)
    for hogs with "in_cgroup"; "{cgroup}" in spec["config_yaml"] names it."""
    parent = own_v2_cgroup_dir()
    d = os.path.join(parent, f"pyoomd-it-cg-{os.getppid()}-{int(time.time() * 1000) % 100000}"
                     + spec.get("v2_cgroup_suffix", ""))
    os.mkdir(d)
    spec["v2_cgroup_dir"] = d
    spec["v2_cgroup_path"] = _v2_path_of(d)  # as /proc/PID/cgroup shows it
    for h in spec.get("hogs", []):
        h["cgroup_procs"] = os.path.join(d, "cgroup.procs")


def _v2_path_of(d: str) -> str:
    base = "/sys/fs/cgroup/unified" if os.path.isdir("/sys/fs/cgroup/unified") else "/sys/fs/cgroup"
    return "/" + os.path.relpath(d, base)


def remove_v2_cgroup(d: str) -> None:
    """Kill what is left of our own hogs in it (cgroup.kill), then remove it."""
    try:
        with open(os.path.join(d, "cgroup.kill"), "w") as f:
            f.write("1")
    except OSError:
        pass
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        with open(os.path.join(d, "cgroup.events")) as f:
            if "populated 0" in f.read():
                break
        time.sleep(0.02)
    os.rmdir(d)


def start_test_bus(spec: dict[str, Any]) -> None:
    """spec["test_bus"]: a dbus-daemon (session rules: anyone may own any
    name) standing in for the system bus; "{bus}" in spec["config_yaml"] and
    in a hog's "free_on_lowmem" become its address."""
    d = tempfile.mkdtemp(prefix="pyoomd-it-bus-")
    os.chmod(d, 0o755)
    path = os.path.join(d, "system_bus_socket")
    p = subprocess.Popen(["dbus-daemon", "--session", "--nofork", "--nopidfile", f"--address=unix:path={path}"],
                         stdout=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    spec["bus_dir"], spec["bus_proc"], spec["bus_address"] = d, p, f"unix:path={path}"
    deadline = time.monotonic() + 10
    while not os.path.exists(path):
        if p.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("the test bus did not start")
        time.sleep(0.01)
    for h in spec.get("hogs", []):
        if h.get("free_on_lowmem") == "{bus}":
            h["free_on_lowmem"] = spec["bus_address"]


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read()
    except FileNotFoundError:
        return None


def start_fake_systemd(spec: dict[str, Any]) -> None:
    """spec["fake_systemd"] = a record file: integration/fake_systemd.py on
    the test bus, "restarting" the scene's v2 cgroup (needs test_bus and v2_cgroup)."""
    record = spec["fake_systemd"]
    p = subprocess.Popen([sys.executable, os.path.join(HERE, "fake_systemd.py"), spec["bus_address"], record,
                          spec["v2_cgroup_dir"]], stdin=subprocess.DEVNULL)
    spec["fake_systemd_proc"] = p
    deadline = time.monotonic() + 10
    while "ready" not in (_read(record) or ""):
        if p.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("the fake systemd did not start")
        time.sleep(0.01)


def own_v1_memcg_path() -> str:
    """Our own v1 memory cgroup, as the kernel names it (the harness's
    safety cgroup)."""
    with open("/proc/self/cgroup") as f:
        for line in f:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            if "memory" in controllers.split(","):
                return path
    raise RuntimeError("no v1 memory controller")


def make_v1_memcg(spec: dict[str, Any]) -> None:
    """spec["v1_memcg"] = {"limit_mib": N}: a child v1 memory cgroup of our
    own with that hard limit, for hogs with "in_memcg" (so the kernel's
    memcg OOM killer, not the machine's, deals with them)."""
    path = own_v1_memcg_path().rstrip("/") + f"/pyoomd-it-oom-{uuid.uuid4().hex[:8]}"
    d = "/sys/fs/cgroup/memory" + path
    os.mkdir(d)
    spec["v1_memcg_dir"], spec["v1_memcg_path"] = d, path
    with open(os.path.join(d, "memory.limit_in_bytes"), "w") as f:
        f.write(str(int(spec["v1_memcg"]["limit_mib"]) << 20))
    for h in spec.get("hogs", []):
        h["memcg_procs"] = os.path.join(d, "cgroup.procs")


def remove_v1_memcg(d: str) -> None:
    """SIGKILL what is left in it (only our own hogs were put there), then remove it."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        with open(os.path.join(d, "cgroup.procs")) as f:
            left = [int(x) for x in f.read().split()]
        if not left:
            break
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.02)
    os.rmdir(d)


def kernel_pid(pid: int) -> int | None:
    """``pid`` (ours, in this namespace) as the kernel logs it: its pid in
    the initial PID namespace, read through the harness's /proc fd
    (PYOOMD_IT_OUTER_PROC_FD, spec "outer_proc"); None without one."""
    fd = os.environ.get("PYOOMD_IT_OUTER_PROC_FD")
    if fd is None:
        return None
    for name in os.listdir(int(fd)):
        if not name.isdigit():
            continue
        try:
            with open(f"{name}/status", opener=lambda p, flags: os.open(p, flags, dir_fd=int(fd))) as f:
                ns = next((line.split()[1:] for line in f if line.startswith("NSpid:")), [])
        except OSError:
            continue
        try:
            same_ns = os.readlink(f"{name}/ns/pid", dir_fd=int(fd)) == os.readlink("/proc/self/ns/pid")
        except OSError:
            continue
        if len(ns) >= 2 and int(ns[-1]) == pid and same_ns:
            return int(name)
    return None


def own_trace_dir(spec: dict[str, Any]) -> None:
    """The flight recorder is on by default: unless the scene configures it,
    its traces go to a directory of the scene's own (spec["trace_dir"],
    removed afterwards), not the machine's /var/lib/pyoomd."""
    if "recorder" not in spec.get("config_yaml", ""):
        spec["trace_dir"] = tempfile.mkdtemp(prefix="pyoomd-it-traces-")
        spec["config_yaml"] = f"recorder: {{dir: {spec['trace_dir']}}}\n" + spec.get("config_yaml", "")


def write_config(spec: dict[str, Any]) -> None:
    """spec["config_yaml"] -> a config file for the daemon ("{cgroup}" replaced)."""
    text = spec["config_yaml"].replace("{cgroup}", spec.get("v2_cgroup_path", "")).replace(
        "{bus}", spec.get("bus_address", ""))
    fd, path = tempfile.mkstemp(prefix="pyoomd-it-config-", suffix=".yaml")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    spec["config_file"] = path


def system_python_named(comm: str) -> str:
    """/usr/bin/python3 under the name ``comm`` (a symlink), for hogs of another user."""
    d = "/tmp/pyoomd-it-comm-user"
    os.makedirs(d, mode=0o755, exist_ok=True)
    os.chmod(d, 0o755)
    path = os.path.join(d, comm)
    if not os.path.lexists(path):
        os.symlink(os.path.realpath(SYSTEM_PYTHON), path)
    return path


def exe_named(comm: str, hardlink: bool) -> str:
    """The interpreter under another name, so the kernel's comm is ``comm``.
    A symlink (default) leaves /proc/PID/exe naming the real interpreter (a
    spoofed name); ``hardlink`` makes /proc/PID/exe the link path itself,
    HARDLINK_DIR/comm (a distinct executable a policy can pin)."""
    base = HARDLINK_DIR if hardlink else SYMLINK_DIR
    os.makedirs(base, mode=0o755, exist_ok=True)
    path = os.path.join(base, comm)
    if not os.path.lexists(path):
        real = os.path.realpath(sys.executable)
        if not hardlink:
            os.symlink(real, path)
        else:
            try:
                os.link(real, path)
            except OSError:  # another filesystem: a copy is a distinct executable too
                shutil.copy2(real, path)
    return path


def write_policies(spec: dict[str, Any]) -> str | None:
    """spec["policies"] = {file name: YAML text} -> a root-owned directory
    for ``--policy``; None when the spec has none."""
    if not spec.get("policies"):
        return None
    d = tempfile.mkdtemp(prefix="pyoomd-it-policies-")
    os.chmod(d, 0o755)
    update_policies(d, spec["policies"])
    return d


def update_policies(d: str, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = os.path.join(d, name)
        with open(path, "w") as f:
            f.write(text)
        os.chmod(path, 0o644)


def reload_daemon(daemon: subprocess.Popen[bytes], log: LogReader, d: str | None, files: dict[str, str],
                  ) -> None:
    """Rewrite policy files, SIGHUP the daemon, wait for its verdict."""
    assert d is not None, "reload_before_hogs needs policies"
    update_policies(d, files)
    seen = len(log.events)
    daemon.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if any(e.get("event") in ("reloaded", "reload_failed") for e in log.events[seen:]):
            return
        time.sleep(0.02)


def set_adj(pid: int, adj: int) -> None:
    """Positive values can be written; -1000 cannot here (no
    CAP_SYS_RESOURCE), so it is emulated by a bind mount over the file in
    this private mount namespace: what any reader of /proc then sees."""
    path = f"/proc/{pid}/oom_score_adj"
    try:
        with open(path, "w") as f:
            f.write(str(adj))
        return
    except OSError:
        pass
    # A file of this scene's own: a shared name (pid 1 and the same child
    # pids in every scene) could be rewritten by another scene while bound.
    fd, fake = tempfile.mkstemp(prefix=f"pyoomd-it-adj-{pid}-")
    with os.fdopen(fd, "w") as f:
        f.write(f"{adj}\n")
    os.chmod(fake, 0o644)
    subprocess.run(["mount", "--bind", fake, path], check=True)
    os.unlink(fake)  # the mount keeps the file; nothing is left in /tmp


class Witness(threading.Thread):
    """Samples MemAvailable every few ms; remembers the minimum, and every
    TRACE_STEP_S a trace row: seconds since the start, MemAvailable and the
    RSS of the processes in ``watched`` (MiB).  The trace is what a failed
    scene prints (harness.describe): whether TERM was crossed, and whether
    the hogs grew or the rest of the machine moved."""

    TRACE_STEP_S = 0.5

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.min_kib = mem_available_kib()
        self.stop = threading.Event()
        self.watched: list[int] = []
        self.trace: list[list[float]] = []

    def run(self) -> None:
        t0 = next_row = time.monotonic()
        while not self.stop.is_set():
            avail = mem_available_kib()
            self.min_kib = min(self.min_kib, avail)
            now = time.monotonic()
            if now >= next_row:
                rss = sum(vm_rss_kib(pid) or 0 for pid in list(self.watched))
                self.trace.append([round(now - t0, 2), avail // 1024, rss // 1024])
                next_row = now + self.TRACE_STEP_S
            time.sleep(WITNESS_STEP_S)


def vm_rss_kib(pid: int) -> int | None:
    """A process's VmRSS (KiB), or None when it is gone."""
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


class LogReader(threading.Thread):
    """Collects the daemon's JSON log lines (stderr).  ``ready``: for another
    daemon (plain-text output), the line that says it has started."""

    def __init__(self, stream: Any, ready: str | None = None) -> None:
        super().__init__(daemon=True)
        self.stream = stream
        self.ready = ready
        self.events: list[dict[str, Any]] = []
        self.raw: list[str] = []
        self.raw_t: list[float] = []  # arrival time (monotonic) of each raw line
        self.started = threading.Event()

    def run(self) -> None:
        for line in self.stream:
            text = line.decode(errors="replace").rstrip("\n")
            self.raw.append(text)
            self.raw_t.append(time.monotonic())
            if self.ready and self.ready in text:
                self.started.set()
            try:
                ev = json.loads(text)
            except ValueError:
                continue
            ev["_t"] = time.monotonic()
            self.events.append(ev)
            if ev.get("event") == "startup":
                self.started.set()


def start_other_daemon(spec: dict[str, Any], term_kib: int, kill_kib: int,
                       ) -> tuple[subprocess.Popen[bytes], LogReader]:
    """spec["daemon"] = "earlyoom" / "nohang" / "nohang10": started as
    integration/bench/daemons.py starts them for the benchmark (earlyoom
    ``-M term,kill``; nohang from a generated config and a run-time relaxed
    copy), in this namespace.  No JSON log: kills are the children that died
    by a signal (spec "watch_children")."""
    from integration.bench import daemons

    name = spec["daemon"]
    tmp = tempfile.mkdtemp(prefix="pyoomd-it-daemon-")
    os.chmod(tmp, 0o755)
    spec["daemon_tmpdir"] = tmp
    nohang_copy = spec.get("nohang_copy") or ""
    if name.startswith("nohang") and not nohang_copy:
        nohang_copy = daemons.make_relaxed_nohang(tmp)
    swap = spec.get("swap_pct")
    argv, extra = daemons.command(name, term_kib, kill_kib, float(spec.get("grace_s", 3.0)), tmp, nohang_copy,
                                  swap_pct=tuple(swap) if swap else None)
    d = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                         env={**os.environ, **extra})
    reader = LogReader(d.stdout, ready=daemons.READY[name])
    reader.start()
    if not reader.started.wait(20):
        d.kill()
        raise RuntimeError(f"{name} did not start: " + "\n".join(reader.raw[-20:]))
    return d, reader


class ScoreWatch(threading.Thread):
    """spec "watch_children": every 10 ms, the kernel's oom_score of each
    hog and bystander (hog.py) in this namespace, frozen at the first death
    (a zombie, a vanished pid or a score fallen to 0 as memory is released):
    the kernel's own order just before anyone was killed."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.scores: dict[int, int] = {}
        self.hogs: set[int] = set()
        self.gone: dict[int, float] = {}  # pid -> when first seen dead (monotonic)
        self.stop = threading.Event()

    def _is_hog(self, pid: int) -> bool:
        if pid not in self.hogs:
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    if b"hog.py" in f.read():
                        self.hogs.add(pid)
            except OSError:
                pass
        return pid in self.hogs

    def run(self) -> None:
        while not self.stop.is_set():
            now: dict[int, int] = {}
            for name in os.listdir("/proc"):
                if not name.isdigit() or not self._is_hog(int(name)):
                    continue
                try:
                    with open(f"/proc/{name}/stat") as f:
                        if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                            continue
                    with open(f"/proc/{name}/oom_score") as f:
                        now[int(name)] = int(f.read())
                except (OSError, ValueError, IndexError):
                    continue
            t = time.monotonic()
            for pid in self.hogs:
                if pid not in self.gone and now.get(pid, 0) == 0 and self.scores.get(pid, 0) > 0:
                    self.gone[pid] = t  # died (or is releasing its memory)
            if not self.gone:  # the order before anyone died stays
                self.scores.update(now)
            time.sleep(0.01)


def start_daemon(spec: dict[str, Any], term_kib: int, kill_kib: int) -> tuple[subprocess.Popen[bytes], LogReader]:
    if spec.get("daemon", "pyoomd") != "pyoomd":
        return start_other_daemon(spec, term_kib, kill_kib)
    argv = [sys.executable, "-m", "pyoomd", "run", "--log-format", "json",
            "-M", f"{term_kib},{kill_kib}", "--config", os.devnull] + list(spec.get("daemon_args", []))
    if spec.get("dry_run"):
        argv.append("--dry-run")
    if spec.get("policy_dir"):
        argv += ["--policy", spec["policy_dir"]]
    if spec.get("config_file"):
        argv += ["--config", spec["config_file"]]  # the last --config wins
    if spec.get("warn_kib"):
        argv += ["--warn", str(spec["warn_kib"])]
    env = dict(os.environ)
    d = subprocess.Popen(argv, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, stdin=subprocess.DEVNULL, env=env)
    reader = LogReader(d.stderr)
    reader.start()
    if not reader.started.wait(15):
        d.kill()
        raise RuntimeError("daemon did not start: " + "\n".join(reader.raw[-20:]))
    return d, reader


def run(spec: dict[str, Any]) -> dict[str, Any]:
    avail0 = mem_available_kib()
    term_kib = avail0 - spec["term_below_mib"] * 1024
    kill_kib = avail0 - spec["kill_below_mib"] * 1024
    if spec.get("warn_below_mib"):
        spec["warn_kib"] = avail0 - spec["warn_below_mib"] * 1024
    bystanders = [start_proc({"rate": 0, "max": b.get("max", 32), "start": b.get("max", 32), "hold": 600,
                              **b}) for b in spec.get("bystanders", [])]
    spec["policy_dir"] = write_policies(spec)
    if spec.get("commands"):
        return run_commands(spec, bystanders)
    daemon, log = start_daemon(spec, term_kib, kill_kib)
    if spec.get("reload_before_hogs"):
        reload_daemon(daemon, log, spec["policy_dir"], spec["reload_before_hogs"])
    after_start = run_after_start(spec.get("after_start", []), log)
    witness = Witness()
    witness.start()
    watch = bool(spec.get("watch_children"))
    scorer = ScoreWatch() if watch else None
    if scorer:
        scorer.start()
    t0 = time.monotonic()
    witness.watched = [b.pid for b in bystanders]
    hogs = []
    for h in spec.get("hogs", []):
        hogs.append((start_proc(h), time.monotonic()))
        witness.watched.append(hogs[-1][0].pid)
    if spec.get("go_file"):  # hogs with "go_file" wait for it: all of them grow together from now
        open(spec["go_file"], "w").close()
    kernel_pids = {h.pid: kernel_pid(h.pid) for h, _ in hogs} if spec.get("outer_proc") else {}
    deadline = t0 + spec.get("timeout", 30)
    stop_after = spec.get("stop_after_events")
    # "watch_children": when each hog/bystander died (and ScoreWatch).
    children = [h for h, _ in hogs] + bystanders
    died: dict[int, float] = {}
    stop_deaths = spec.get("stop_after_hog_deaths")
    while time.monotonic() < deadline:
        if watch:
            now = time.monotonic()
            for c in children:
                if c.pid not in died and c.poll() is not None:
                    died[c.pid] = round(now - t0, 3)
        if all(h.poll() is not None for h, _ in hogs):
            break
        if stop_after and sum(1 for e in log.events if e.get("event") in stop_after) >= 1:
            break
        if stop_deaths and sum(1 for h, _ in hogs if h.poll() is not None) >= stop_deaths:
            break
        if spec.get("stop_after_deaths") and sum(1 for c in children if c.poll() is not None) >= spec["stop_after_deaths"]:
            break
        time.sleep(0.02)
    time.sleep(spec.get("linger", 0.3))
    if scorer:
        scorer.stop.set()
        scorer.join(2)
        for c in children:
            if c.pid not in died and c.poll() is not None:
                died[c.pid] = round(time.monotonic() - t0, 3)
    witness.stop.set()
    witness.join()
    result = {
        "avail0_kib": avail0, "term_kib": term_kib, "kill_kib": kill_kib,
        "min_avail_kib": witness.min_kib, "trace": witness.trace,
        "overshoot_mib": max(0, term_kib - witness.min_kib) / 1024,
        "hogs": [{"pid": h.pid, "returncode": h.poll(), "started": ts - t0, "kernel_pid": kernel_pids.get(h.pid)}
                 for h, ts in hogs],
        "bystanders": [{"pid": b.pid, "returncode": b.poll()} for b in bystanders],
        "daemon_pid": daemon.pid, "daemon_returncode": daemon.poll(), "after_start": after_start,
    }
    if watch:
        for entry in result["hogs"] + result["bystanders"]:
            seen = scorer.gone.get(entry["pid"]) if scorer else None
            entry["died_s"] = died.get(entry["pid"])
            if seen is not None and entry["died_s"] is not None:
                entry["died_s"] = min(entry["died_s"], round(seen - t0, 3))
            entry["oom_score_before"] = scorer.scores.get(entry["pid"]) if scorer else None
    daemon.send_signal(signal.SIGTERM)
    try:
        daemon.wait(5)
    except subprocess.TimeoutExpired:
        daemon.kill()
    log.join(2)
    result["events"] = [{k: v for k, v in e.items()} for e in log.events]
    result["log_tail"] = log.raw[-30:]
    if spec.get("daemon", "pyoomd") != "pyoomd":
        result["daemon"] = spec["daemon"]
        result["daemon_lines"] = [[round(t - t0, 4), line] for t, line in zip(log.raw_t, log.raw)][-300:]
    for t0_ev in result["events"]:
        t0_ev["_t"] = round(t0_ev["_t"] - t0, 4)
    return result


def run_after_start(steps: list[dict[str, Any]], log: LogReader) -> list[dict[str, Any]]:
    """spec "after_start": steps run once the daemon has started, before the
    hogs: {"argv": [...]} runs a command ("pyoomd" as argv[0]: this
    interpreter's ``-m pyoomd``), {"wait_event": name, "timeout": s} waits
    for the daemon to log that event, {"sleep": s} sleeps.  Their outputs, in
    order (none for a sleep)."""
    out: list[dict[str, Any]] = []
    for step in steps:
        if "argv" in step:
            argv = list(step["argv"])
            if argv[0] == "pyoomd":
                argv = [sys.executable, "-m", "pyoomd", *argv[1:]]
            r = subprocess.run(argv, capture_output=True, timeout=step.get("timeout", 30), check=False)
            out.append({"argv": step["argv"], "rc": r.returncode, "stdout": r.stdout.decode(errors="replace"),
                        "stderr": r.stderr.decode(errors="replace")})
        elif "sleep" in step:
            time.sleep(float(step["sleep"]))
        elif "wait_event" in step:
            t0 = time.monotonic()
            deadline = t0 + step.get("timeout", 10)
            while time.monotonic() < deadline and not any(e.get("event") == step["wait_event"] for e in log.events):
                time.sleep(0.01)
            seen = any(e.get("event") == step["wait_event"] for e in log.events)
            out.append({"wait_event": step["wait_event"], "seen": seen, "waited_s": round(time.monotonic() - t0, 3)})
    return out


def run_commands(spec: dict[str, Any], procs: list[subprocess.Popen[bytes]]) -> dict[str, Any]:
    """No daemon: run pyoomd sub-commands against this namespace's /proc."""
    hogs = [start_proc(h) for h in spec.get("hogs", [])]
    out = []
    for args in spec["commands"]:
        args = [a.replace("{policy_dir}", spec.get("policy_dir") or "") for a in args]
        r = subprocess.run([sys.executable, "-m", "pyoomd", *args], capture_output=True, timeout=30, check=False)
        out.append({"args": args, "rc": r.returncode, "stdout": r.stdout.decode(errors="replace"),
                    "stderr": r.stderr.decode(errors="replace")})
    return {"commands": out, "hogs": [{"pid": h.pid} for h in hogs],
            "bystanders": [{"pid": b.pid} for b in procs], "events": []}


def hide_system_bus() -> None:
    """An empty tmpfs over /run/dbus in this scene's private mount namespace
    (unshare --mount-proc makes one, with private propagation): a daemon in
    the scene must not claim org.freedesktop.LowMemoryMonitor on, nor send
    LowMemoryWarning to, the machine's real system bus (low_memory_monitor
    is on by default).  Scenes that test it start their own bus."""
    if os.path.isdir("/run/dbus"):
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k,mode=0755", "pyoomd-no-system-bus", "/run/dbus"],
                       check=True)


def main() -> int:
    if os.getpid() != 1:
        print("nsrun.py must run as PID 1 of a private PID namespace", file=sys.stderr)
        return 2
    hide_system_bus()
    spec = json.loads(sys.argv[1])
    try:
        if spec.get("v2_cgroup"):
            make_v2_cgroup(spec)
        if spec.get("test_bus"):
            start_test_bus(spec)
        if spec.get("fake_systemd"):
            start_fake_systemd(spec)
        if spec.get("v1_memcg"):
            make_v1_memcg(spec)
        own_trace_dir(spec)
        write_config(spec)
        result = run(spec)
        result["v2_cgroup_path"] = spec.get("v2_cgroup_path")
        result["v1_memcg_path"] = spec.get("v1_memcg_path")
    finally:
        if spec.get("policy_dir"):
            shutil.rmtree(spec["policy_dir"], ignore_errors=True)
        if spec.get("config_file"):
            os.unlink(spec["config_file"])
        if spec.get("trace_dir"):
            shutil.rmtree(spec["trace_dir"], ignore_errors=True)
        if spec.get("daemon_tmpdir"):
            shutil.rmtree(spec["daemon_tmpdir"], ignore_errors=True)
        if spec.get("fake_systemd_proc"):
            spec["fake_systemd_proc"].kill()
            spec["fake_systemd_proc"].wait()
        if spec.get("bus_dir"):
            spec["bus_proc"].kill()
            spec["bus_proc"].wait()
            shutil.rmtree(spec["bus_dir"], ignore_errors=True)
        if spec.get("v2_cgroup_dir"):
            remove_v2_cgroup(spec["v2_cgroup_dir"])
        if spec.get("v1_memcg_dir"):
            remove_v1_memcg(spec["v1_memcg_dir"])
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
