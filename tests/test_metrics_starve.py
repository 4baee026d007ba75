"""The metrics endpoint cannot be starved (issue 13, item 4): a real
``pyoomd run --dry-run`` (on a procfs copy whose memory we set, its one
candidate a sleeper of ours: no signal is sent) with metrics, the status
socket and a pre_kill hook; 100 idle TCP connections to the endpoint; a
fresh scrape still answers within a bound, the status socket answers, the
hook runs, the daemon's threads stay few, every log line is JSON."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pyoomd.report.httpserve import MAX_CONNECTIONS, BoundedHTTPServer

FIXTURE = Path(__file__).parent / "fixtures" / "proc"
HIGH, LOW = b"MemAvailable:    9999999 kB", b"MemAvailable:    6822140 kB"  # same length: rewritten in place
IDLE = 100
SCRAPE_BOUND_S = 2.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _threads(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    raise AssertionError("no Threads line")


def _scrape(port: int, timeout: float = 5.0) -> tuple[float, bytes]:
    t0 = time.monotonic()
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=timeout) as r:
        body = r.read()
    return time.monotonic() - t0, body


def _idle_connections(port: int, n: int) -> list[socket.socket]:
    socks = []
    for i in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        if i % 2:
            s.send(b"GET /metr")  # a request begun and never finished
        socks.append(s)
    return socks


@pytest.fixture
def scene() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="pyoomd-starve-"))
    os.chmod(d, 0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def test_idle_connections_do_not_starve_metrics_status_or_hooks(scene: Path) -> None:
    out = scene / "out"
    out.mkdir()
    os.chmod(out, 0o777)  # as root, hooks run as nobody
    run = scene / "run"
    run.mkdir(mode=0o700)
    procfs = scene / "procfs"
    procfs.mkdir()
    shutil.copytree(FIXTURE / "pressure", procfs / "pressure")
    meminfo = (FIXTURE / "meminfo").read_bytes()
    assert LOW in meminfo
    (procfs / "meminfo").write_bytes(meminfo.replace(LOW, HIGH))
    victim = subprocess.Popen(["sleep", "120"])
    (procfs / str(victim.pid)).symlink_to(f"/proc/{victim.pid}")
    port = _free_port()
    cfg = scene / "config.yaml"
    cfg.write_text(f'metrics: {{listen: "127.0.0.1:{port}"}}\n'
                   f"status: {{socket: {run}/status.sock}}\n"
                   f'hooks: {{pre_kill: [["/bin/sh", "-c", "echo ran >> {out}/ran"]], pre_kill_wait: 1s}}\n'
                   "policy_dirs: []\n")
    daemon = subprocess.Popen([sys.executable, "-m", "pyoomd", "--procfs", str(procfs), "run", "--dry-run",
                               "--log-format", "json", "-m", "50,45", "-s", "100,90", "--config", str(cfg)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    socks: list[socket.socket] = []
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                _scrape(port, timeout=1)
                break
            except OSError:
                assert daemon.poll() is None and time.monotonic() < deadline, "the endpoint never answered"
                time.sleep(0.1)
        threads_before = _threads(daemon.pid)
        socks = _idle_connections(port, IDLE)
        time.sleep(0.5)
        took, body = _scrape(port)
        assert b"pyoomd_level" in body and took < SCRAPE_BOUND_S, took
        assert _threads(daemon.pid) <= threads_before + 1, (threads_before, _threads(daemon.pid))
        status = subprocess.run([sys.executable, "-m", "pyoomd", "status", "--json", "--socket",
                                 str(run / "status.sock")], capture_output=True, timeout=10, check=False)
        assert status.returncode == 0, status.stderr
        assert json.loads(status.stdout)["dry_run"] is True
        # Memory falls: a dry-run kill of the sleeper, and its pre_kill hook runs.
        with open(procfs / "meminfo", "r+b") as f:
            f.write(meminfo)
        deadline = time.monotonic() + 15
        while not (out / "ran").exists():
            assert time.monotonic() < deadline, "the hook never ran"
            time.sleep(0.05)
        took2, _ = _scrape(port)
        assert took2 < SCRAPE_BOUND_S
        threads_under_load = _threads(daemon.pid)
        print(f"scrape under {IDLE} idle connections: {took * 1000:.1f} ms, {took2 * 1000:.1f} ms after the kill; "
              f"threads {threads_before} -> {threads_under_load}")
    finally:
        for s in socks:
            s.close()
        daemon.terminate()
        stdout, stderr = daemon.communicate(timeout=20)
        victim.kill()
        victim.wait()
    assert stdout == b""
    events = [json.loads(line) for line in stderr.decode().splitlines()]  # nothing but JSON lines
    names = [e["event"] for e in events]
    assert "kill" in names and "shutdown" in names
    assert not [e for e in events if e["event"].endswith("_exception")], events
    assert threads_under_load < 12, threads_under_load


def test_the_server_keeps_at_most_max_connections_and_serves_the_newest() -> None:
    logged: list[str] = []
    srv = BoundedHTTPServer("127.0.0.1", 0, lambda: ("text/plain", b"ok\n"), lambda ev, **kw: logged.append(ev))
    srv.start()
    try:
        socks = _idle_connections(srv.server_port, 3 * MAX_CONNECTIONS)
        time.sleep(0.3)
        assert len(srv.conns) <= MAX_CONNECTIONS
        t0 = time.monotonic()
        with urllib.request.urlopen(f"http://127.0.0.1:{srv.server_port}/metrics", timeout=5) as r:
            assert r.read() == b"ok\n"
        assert time.monotonic() - t0 < SCRAPE_BOUND_S
        for path, code in (("/nope", 404),):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{srv.server_port}{path}", timeout=5)
            except urllib.error.HTTPError as e:
                assert e.code == code
        big = socket.create_connection(("127.0.0.1", srv.server_port), timeout=5)
        big.sendall(b"GET /metrics HTTP/1.1\r\nX: " + b"a" * 20000)
        assert big.recv(100).startswith(b"HTTP/1.1 431")
        big.close()
        for s in socks:
            s.close()
    finally:
        srv.shutdown()
        srv.server_close()
    assert logged == []


def test_an_idle_connection_is_closed_after_the_request_timeout() -> None:
    from pyoomd.report import httpserve

    srv = BoundedHTTPServer("127.0.0.1", 0, lambda: ("text/plain", b"ok\n"), lambda ev, **kw: None).start()
    try:
        s = socket.create_connection(("127.0.0.1", srv.server_port), timeout=10)
        t0 = time.monotonic()
        assert s.recv(10) == b""  # closed by the server
        assert httpserve.REQUEST_TIMEOUT_S - 0.2 < time.monotonic() - t0 < httpserve.REQUEST_TIMEOUT_S + 2
        s.close()
    finally:
        srv.shutdown()
        srv.server_close()


def test_an_exception_in_any_thread_is_a_json_event_not_a_raw_traceback() -> None:
    code = ("import sys, threading\n"
            "from pyoomd.report import log\n"
            "log.configure('json', sys.stderr); log.install_excepthooks()\n"
            "t = threading.Thread(target=lambda: 1 / 0, name='worker'); t.start(); t.join()\n"
            "import warnings; warnings.warn('careful')\n"
            "class Bad:\n"
            "    def __del__(self): raise ValueError('in del')\n"
            "Bad()\n"
            "raise RuntimeError('main')\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=30, check=False)
    assert r.returncode == 1 and r.stdout == b""
    events = [json.loads(line) for line in r.stderr.decode().splitlines()]
    assert [e["event"] for e in events] == ["thread_exception", "python_warning", "unraisable_exception",
                                              "uncaught_exception"]
    assert events[0]["thread"] == "worker" and "ZeroDivisionError" in events[0]["traceback"]
    assert events[1]["message"] == "careful" and "RuntimeError" in events[3]["error"]


def test_a_flood_of_scrapes_renders_at_most_once_per_interval() -> None:
    from prometheus_client import CollectorRegistry, Counter

    from pyoomd.report.httpserve import RENDER_EVERY_S, prometheus_render

    registry = CollectorRegistry()
    c = Counter("x", "x", registry=registry)
    renders = []

    class Probe:
        def collect(self) -> list[Any]:
            renders.append(time.monotonic())
            return []

    registry.register(Probe())  # type: ignore[arg-type]
    srv = BoundedHTTPServer("127.0.0.1", 0, prometheus_render(registry), lambda ev, **kw: None).start()
    try:
        t0 = time.monotonic()
        for _ in range(100):
            with urllib.request.urlopen(f"http://127.0.0.1:{srv.server_port}/metrics", timeout=5) as r:
                r.read()
        took = time.monotonic() - t0
        assert len(renders) <= took / RENDER_EVERY_S + 1 and len(renders) < 100
        c.inc()
        time.sleep(RENDER_EVERY_S)
        with urllib.request.urlopen(f"http://127.0.0.1:{srv.server_port}/metrics", timeout=5) as r:
            assert b"x_total 1.0" in r.read()  # fresh again after the interval
    finally:
        srv.shutdown()
        srv.server_close()
