"""The flight recorder and replay (issue 16): the ring's bounds, the trace
file's round trip and version check, and replays of recorded and
hand-built episodes with known outcomes."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path
from typing import Any

import pytest
from helpers import BASE, ENV, FIXTURE_PROC, FakeProc, build, stat_line, status_text, wait_for_event
from logcapture import Log

from pyoomd.cli import replay, replay_model, replay_report
from pyoomd.daemon import Daemon
from pyoomd.daemon.launch import trace_header
from pyoomd.model import MemSample
from pyoomd.policy.load import load_policies
from pyoomd.report import recorder
from pyoomd.settings.load import settings_from_dict
from pyoomd.settings.plan import settings_from_plan, settings_to_plan
from pyoomd.settings.schema import Settings
from pyoomd.trace import FORMAT_VERSION, TraceError, read_trace, write_trace

GIB = 1 << 20  # KiB
MIB = 1 << 10


class Script:
    """A sampler and clock: MemAvailable(t) from a function, t advanced by sleep."""

    backend = "python"
    has_psi = False

    def __init__(self, avail: Any, t0: float = 1000.0) -> None:
        self.t = t0
        self.avail = avail

    def clock(self) -> float:
        return self.t

    def sleep(self, s: float) -> None:
        self.t += s

    def read(self) -> MemSample:
        return MemSample(16 * GIB, int(self.avail(self.t)), 0, 0, None, False)

    def close(self) -> None:
        pass


# -- the ring ------------------------------------------------------------------------
def test_ring_keeps_at_most_its_bytes_and_seconds() -> None:
    ring = recorder.Ring(seconds=30.0, max_bytes=256 << 10, chunk_bytes=16 << 10)
    for i in range(60_000):
        ring.add(("s", i * 0.01, 16 * GIB, 8 * GIB - i, 0, 0, False, None), 160)
        assert ring.nbytes <= 256 << 10
    got = recorder.entries_of(*ring.snapshot())
    ts = [e[1] for e in got]
    assert ts == sorted(ts) and ts[-1] == pytest.approx(599.99)
    assert ts[0] >= 599.99 - 30.0 - 2.0  # at most one sealed chunk older than the window
    assert ring.dropped_chunks > 0


def test_ring_bytes_bound_wins_over_seconds() -> None:
    ring = recorder.Ring(seconds=3600.0, max_bytes=64 << 10, chunk_bytes=8 << 10)
    for i in range(50_000):  # incompressible payloads
        ring.add(("r", float(i), f"/proc/{i}/stat", bytes((i * 7919 + k) % 251 for k in range(64))), 254)
    assert ring.nbytes <= 64 << 10
    got = recorder.entries_of(*ring.snapshot())
    assert got[-1][1] == 49_999.0 and len(got) < 50_000


# -- the trace file --------------------------------------------------------------------
def test_trace_round_trip_keeps_bytes_and_order(tmp_path: Path) -> None:
    entries: list[tuple[Any, ...]] = [
        ("s", 1.0, 16 * GIB, 8 * GIB, 0, 0, False, (0.5, 0.2, 0.1, 1234, (0.1, 0.0, 0.0, 99))),
        ("s", 1.5, 16 * GIB, 7 * GIB, 0, 0, False, 0),
        ("r", 1.6, "/proc/5/cmdline", b"a\0b\xff\n"),
        ("r", 1.7, "/proc/6/stat", 2),
        ("l", 1.8, "/proc", (1, 5, 6)),
        ("a", 1.9, "/sys/fs/cgroup/x", "user.oomd_omit", b"1"),
        ("e", 2.0, "kill", {"pid": 5, "candidates": [{"pid": 5}]}),
    ]
    header = {"format": "pyoomd-trace", "version": FORMAT_VERSION, "settings": {}, "policy": None}
    info = write_trace(str(tmp_path / "t" / "a.trace.gz"), header, entries)
    assert info["entries"] == 7 and info["seconds"] == 1.0
    assert (tmp_path / "t").stat().st_mode & 0o777 == 0o700
    assert (tmp_path / "t" / "a.trace.gz").stat().st_mode & 0o777 == 0o600
    back = read_trace(info["path"])
    assert back.entries == entries


def test_a_newer_trace_format_is_refused_with_a_clear_message(tmp_path: Path) -> None:
    p = tmp_path / "new.trace.gz"
    with gzip.open(p, "wb") as f:
        f.write(json.dumps({"format": "pyoomd-trace", "version": FORMAT_VERSION + 1, "pyoomd": "9.0"}).encode()
                + b"\n")
    with pytest.raises(TraceError, match=r"format version 2 \(written by pyoomd 9.0\) is newer"):
        read_trace(str(p))
    p.write_bytes(gzip.compress(b'{"hello": 1}\n'))
    with pytest.raises(TraceError, match="not a pyoomd trace"):
        read_trace(str(p))
    p.write_bytes(gzip.compress(b'{"format": "pyoomd-trace", "version": 1}\n["s", 1.0, 5]\n' * 50)[:60])
    with pytest.raises(TraceError, match="cannot read"):
        read_trace(str(p))
    p.write_bytes(b"plain text")
    with pytest.raises(TraceError, match="cannot read"):
        read_trace(str(p))


# -- record a live (dry-run) episode, replay it ----------------------------------------------
PROCS = [
    FakeProc(BASE + 1, 700, comm=b"db", rss_kib=2500 * MIB, exe="/usr/bin/db"),
    FakeProc(BASE + 2, 400, comm=b"leak", rss_kib=1500 * MIB, exe="/usr/bin/leak"),
    FakeProc(BASE + 3, 300, comm=b"tab", rss_kib=300 * MIB, exe="/usr/bin/tab"),
]
SETTINGS = {"dry_run": True, "status": {"socket": None}, "psi": {"enabled": False, "wakeup": {"enabled": False}},
            "memory": {"term": "2G", "kill": "1G", "warn": "4G"}, "swap": {"term": "0%", "kill": "0%"},
            "growth": {"enabled": False}, "swap_relief": {"enabled": False}}


def _join(rec: recorder.Recorder) -> None:
    """Wait for a trace being written (the test's clock does not wait)."""
    job = rec._job
    if job is not None:
        job[0].join(10)


def _record(tmp_path: Path) -> tuple[str, Log]:
    """A dry-run daemon over a fake /proc while MemAvailable falls 6 -> 1.5 GiB
    in 10 s, recorder on; returns the trace it wrote after the kill."""
    procfs = build(tmp_path / "proc", PROCS)
    script = Script(lambda t: max(1.5 * GIB, 6 * GIB - (t - 1000.0) * 0.45 * GIB))
    cfg = settings_from_dict({**SETTINGS, "recorder": {"dir": str(tmp_path / "traces")}})
    ring, rp, rs = recorder.recording(procfs, script, cfg.recorder)
    rp.clock = rs.clock = script.clock
    log = Log()
    d = Daemon(cfg, rp, rs, log, clock=script.clock, sleep=script.sleep)
    # The fake pids do not exist: in dry-run the killer needs only a descriptor to close.
    d.killer.open_verified = lambda pid, start: os.open("/dev/null", os.O_RDONLY)  # type: ignore[method-assign]
    rec = recorder.attach(d, ring, cfg.recorder, lambda: trace_header(d, rp.root))
    rec.clock = d.vmstat.clock = script.clock
    while script.t < 1030.0 and not log.named("trace_written"):
        script.sleep(d.tick())
        _join(rec)
    d.tick()
    assert log.named("kill"), log.events
    (written,) = log.named("trace_written")
    return written["path"], log


def test_a_kill_writes_a_trace_whose_replay_names_the_same_victim(tmp_path: Path) -> None:
    path, log = _record(tmp_path)
    live_kill = log.named("kill")[0]
    assert live_kill["comm"] == "db"  # oom_score order, no growth
    trace = read_trace(path)
    assert trace.header["pyoomd"] and trace.header["version"] == FORMAT_VERSION
    settings = settings_from_plan(trace.header["settings"])
    res = replay.run(trace, settings, None)
    assert [f["pid"] for _, f in res.kills][:1] == [live_kill["pid"]]
    (t_live,) = [e[1] for e in trace.entries if e[0] == "e" and e[2] == "kill"][:1]
    assert res.kills[0][0] == pytest.approx(t_live, abs=1.0)
    assert [lv for _, lv, _, _ in res.levels][:3] == ["OK", "WARN", "TERM"]


def test_replay_with_a_policy_protecting_the_victim_names_the_next(tmp_path: Path) -> None:
    path, _ = _record(tmp_path)
    pol = tmp_path / "keep-db.yaml"
    pol.write_text("version: 1\nrules:\n  - name: keep-db\n    match: {exe: /usr/bin/db}\n    protect: true\n")
    loaded = load_policies([str(pol)])
    trace = read_trace(path)
    res = replay.run(trace, settings_from_plan(trace.header["settings"]), loaded)
    assert res.kills and res.kills[0][1]["comm"] == "leak"
    assert all(c["comm"] != "db" for c in res.kills[0][1]["candidates"])


# -- hand-built: the kill model ------------------------------------------------------------
def _hand_trace(tmp_path: Path, settings: dict[str, Any]) -> str:
    """Live: MemAvailable falls 1 GiB/s from 5 GiB for 4.2 s (samples every
    50 ms); 'db' (pid 11, 2.5 GiB) killed at the TERM crossing (1 GiB, t=4.0),
    exited at 4.05 and its memory came back."""
    procs = {11: ("db", 700, 2500), 12: ("leak", 400, 1500), 13: ("tab", 300, 300)}
    e: list[tuple[Any, ...]] = []
    for t in (0.0, 2.0, 4.0, 6.0):
        alive = [p for p in procs if not (p == 11 and t > 4.05)]
        e.append(("l", t, "/proc", tuple(alive)))
        for pid in alive:
            comm, score, mib = procs[pid]
            e += [("r", t, f"/proc/{pid}/oom_score", f"{score}\n".encode()),
                  ("r", t, f"/proc/{pid}/stat", stat_line(pid, comm.encode())),
                  ("r", t, f"/proc/{pid}/status", status_text(pid, comm, 1000, mib * MIB)),
                  ("r", t, f"/proc/{pid}/oom_score_adj", b"0\n"),
                  ("r", t, f"/proc/{pid}/cmdline", f"/usr/bin/{comm}\0".encode()),
                  ("k", t, f"/proc/{pid}/exe", f"/usr/bin/{comm}"),
                  ("r", t, f"/proc/{pid}/cgroup", b"0::/app.slice\n")]
    for i in range(400):
        t = i * 0.05
        avail = 5 * GIB - int(min(t, 4.2) * GIB) + (2500 * MIB if t >= 4.05 - 1e-9 else 0)
        e.append(("s", t, 16 * GIB, max(0, avail), 0, 0, False, None))
    e.append(("e", 4.0, "kill", {"pid": 11, "comm": "db", "signal": "SIGTERM", "rss_kib": 2500 * MIB,
                                   "swap_kib": 0, "candidates": []}))
    e.append(("e", 4.05, "victim_exited", {"pid": 11, "comm": "db", "ms": 50.0, "signals": ["SIGTERM"]}))
    e.sort(key=lambda x: x[1])
    header = {"format": "pyoomd-trace", "version": 1, "pyoomd": "0.1.0", "procfs": "/proc", "skip": [1],
              "pid": 2, "settings": settings_to_plan(settings_from_dict(settings)), "policy": None}
    return write_trace(str(tmp_path / "hand.trace.gz"), header, e)["path"]


HAND = {**SETTINGS, "dry_run": False, "memory": {"term": "1G", "kill": "512M", "warn": "3G"}}


def test_hand_built_trace_same_config_same_victim_at_the_same_time(tmp_path: Path) -> None:
    trace = read_trace(_hand_trace(tmp_path, HAND))
    res = replay.run(trace, settings_from_plan(trace.header["settings"]), None)
    assert [f["comm"] for _, f in res.kills] == ["db"]
    # TERM = 1 GiB is crossed at t = 4.0 s (samples every 50 ms)
    low = [t for t, _, ev, _ in res.events if ev == "low_memory"]
    assert low[0] == pytest.approx(4.0, abs=0.051)
    exited = [f for _, _, ev, f in res.events if ev == "victim_exited"]
    assert exited[0]["pid"] == 11 and exited[0]["ms"] == pytest.approx(50.0)


def test_hand_built_trace_other_victim_follows_the_model(tmp_path: Path) -> None:
    """With 'db' protected the replay kills 'leak'; its 1500 MiB come back
    after the live victim's time to exit (50 ms), and db's 2500 MiB, freed
    live, are taken out again: 0.8 + 1.46 GiB, above TERM, no second kill."""
    trace = read_trace(_hand_trace(tmp_path, HAND))
    pol = tmp_path / "keep-db.yaml"
    pol.write_text("version: 1\nrules:\n  - name: keep-db\n    match: {exe: /usr/bin/db}\n    protect: true\n")
    store = replay.Store(trace.entries)
    res = replay.run(trace, settings_from_plan(trace.header["settings"]), load_policies([str(pol)]))
    comms = [f["comm"] for _, f in res.kills]
    assert comms[0] == "leak"
    t_kill = res.kills[0][0]
    # deaths model, checked directly
    d = replay_model.Deaths(live={11: (4.05, 2500 * MIB)}, replay={12: (t_kill + 0.05, 1500 * MIB)})
    sampler = replay.ReplaySampler(store, replay_model.SimClock(t_kill + 0.1), d)
    raw = store.sample_at(t_kill + 0.1).mem_available_kib
    assert sampler.read().mem_available_kib == raw + 1500 * MIB - 2500 * MIB
    assert comms == ["leak"]
    assert t_kill == pytest.approx(4.0, abs=0.051)


def test_replay_of_a_120_s_trace_takes_well_under_a_second(tmp_path: Path) -> None:
    import time

    path, _ = _record(tmp_path)
    trace = read_trace(path)
    t0 = time.perf_counter()
    replay.run(trace, settings_from_plan(trace.header["settings"]), None)
    assert time.perf_counter() - t0 < 1.0


# -- configuration ----------------------------------------------------------------------------
@pytest.mark.parametrize("text, what", [
    ("recorder:\n  dir: traces\n", "absolute"),
    ("recorder:\n  enabled: true\n  seconds: -5\n", "recorder.seconds: not a duration: -5"),
    ("recorder:\n  memory_mib: 0.01\n", "greater than or equal to 0.25"),
    ("recorder:\n  max_files: 0\n", "greater than or equal to 1"),
    ("recorder:\n  color: red\n", "color"),
])
def test_bad_recorder_settings_name_file_and_line(tmp_path: Path, text: str, what: str) -> None:
    from pyoomd.errors import ConfigError
    from pyoomd.settings.load import load_config

    cfg = tmp_path / "c.yaml"
    cfg.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_config(str(cfg))
    msg = str(e.value)
    assert msg.startswith(f"{cfg}:{len(text.splitlines())}:") and what in msg, msg


def test_recorder_off_builds_no_ring(tmp_path: Path) -> None:
    from pyoomd.daemon import launch as loop

    cfg = tmp_path / "c.yaml"
    cfg.write_text("recorder: {enabled: false}\nstatus: {socket: null}\npsi: {wakeup: {enabled: false}}\n"
                   "policy_dirs: []\n")
    plan = loop.compile_plan(["--procfs", str(Path(__file__).parent / "fixtures" / "proc"), "run", "--dry-run",
                              "--log-format", "json", "--config", str(cfg)], capture_stderr=True)
    assert plan is not None
    daemon, stops = loop.build(plan, lambda: plan)
    try:
        assert not isinstance(daemon.procfs, recorder.RecordingProcfs)
        assert not any(isinstance(o, recorder.Recorder) for o in daemon.observers)
    finally:
        for stop in stops:
            stop()


# -- a real trace (integration/test_replay.py's growth scene, recorded live as root) ------------
REAL = str(Path(__file__).parent / "fixtures" / "traces" / "growth-scene.trace.gz")


def test_the_recorded_growth_scene_replays_to_the_leak_and_a_tab_when_it_is_kept(tmp_path: Path) -> None:
    """Three tabs at adj 300 and a leak (pid 10) that the live daemon killed;
    the README's worked example."""
    from pyoomd.policy.rules import loaded_from_plan

    trace = read_trace(REAL)
    h = trace.header
    res = replay.run(trace, settings_from_plan(h["settings"]), loaded_from_plan(h["policy"]))
    assert [(f["pid"], f["comm"]) for _, f in res.kills] == [(10, "leak")]
    live = replay_report.live_rows(trace)
    got = replay_report.replay_rows(trace, res)
    assert got[0]["crossing_t"] == live[0]["crossing_t"]
    pol = tmp_path / "keep-leak.yaml"
    pol.write_text("version: 1\nrules:\n  - name: keep-leak\n    match: {comm: leak, user: root}\n"
                   "    protect: true\n")
    res2 = replay.run(trace, settings_from_plan(h["settings"]), load_policies([str(pol)]))
    assert [f["comm"] for _, f in res2.kills] == ["tab2"]  # the runner-up of the live table
    assert live[0]["candidates"][1]["comm"] == "tab2"


def test_replay_command_prints_the_timeline_and_the_difference(tmp_path: Path, capsys: Any) -> None:
    from pyoomd.cli.dispatch import main

    pol = tmp_path / "keep-leak.yaml"
    pol.write_text("version: 1\nrules:\n  - name: keep-leak\n    match: {comm: leak, user: root}\n"
                   "    protect: true\n")
    assert main(["replay", REAL]) == 0
    out = capsys.readouterr().out
    assert "kill leak (pid 10) SIGTERM" in out and "the same victims in the same order as the live daemon" in out
    assert main(["replay", REAL, "--policy", str(pol), "--compare", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [r["label"] for r in doc["runs"]] == ["the recorded plan", f"policy {pol}"]
    assert doc["runs"][1]["differences"] == ["victims: the recorded plan leak (pid 10); replay tab2 (pid 3)"]
    newer = tmp_path / "newer.trace.gz"
    newer.write_bytes(gzip.compress(b'{"format": "pyoomd-trace", "version": 99, "pyoomd": "7.0"}\n'))
    assert main(["replay", str(newer)]) == 65
    assert "is newer than this pyoomd" in capsys.readouterr().err


def test_trace_dir_is_kept_to_its_count_and_size(tmp_path: Path) -> None:
    from pyoomd.trace import prune_dir

    d = tmp_path / "traces"
    d.mkdir()
    for i in range(8):
        f = d / f"2026010{i}T000000.000Z-pid{i}.trace.gz"
        f.write_bytes(b"x" * 1000)
        os.utime(f, (1000 + i, 1000 + i))
    (d / "notes.txt").write_text("not ours")
    removed = prune_dir(str(d), max_files=5, max_bytes=1 << 20)
    assert len(removed) == 3 and "20260100T000000.000Z-pid0.trace.gz" in removed
    removed = prune_dir(str(d), max_files=5, max_bytes=2500)
    assert len(removed) == 3
    assert sorted(p.name for p in d.iterdir()) == ["20260106T000000.000Z-pid6.trace.gz",
                                                   "20260107T000000.000Z-pid7.trace.gz", "notes.txt"]
    assert prune_dir(str(d), max_files=5, max_bytes=10) == ["20260106T000000.000Z-pid6.trace.gz"]  # newest kept


def test_an_unwritable_trace_dir_is_an_event_not_a_failure(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    procfs = build(tmp_path / "proc", PROCS)
    script = Script(lambda t: max(1.5 * GIB, 6 * GIB - (t - 1000.0) * 0.45 * GIB))
    cfg = settings_from_dict({**SETTINGS, "recorder": {"dir": str(blocker / "traces")}})
    ring, rp, rs = recorder.recording(procfs, script, cfg.recorder)
    rp.clock = rs.clock = script.clock
    log = Log()
    d = Daemon(cfg, rp, rs, log, clock=script.clock, sleep=script.sleep)
    d.killer.open_verified = lambda pid, start: os.open("/dev/null", os.O_RDONLY)  # type: ignore[method-assign]
    rec = recorder.attach(d, ring, cfg.recorder, lambda: trace_header(d, rp.root))
    rec.clock = d.vmstat.clock = script.clock
    while script.t < 1030.0 and not log.named("trace_failed"):
        script.sleep(d.tick())
        _join(rec)
    (failed,) = log.named("trace_failed")
    assert failed["dir"] == str(blocker / "traces") and "NotADirectoryError" in failed["error"]
    d.tick()  # and the loop goes on


# -- pyoomd status --dump-trace --------------------------------------------------------------
def test_status_dump_trace_has_the_running_daemon_write_its_ring(tmp_path: Path) -> None:
    """The real `python -m pyoomd run --dry-run` on the fixture /proc; `pyoomd
    status --dump-trace FILE` signals it (SIGUSR1, the pid from the socket's
    peer credentials) and copies the trace it writes."""
    import signal
    import subprocess
    import sys
    import time

    sock, traces, out = tmp_path / "status.sock", tmp_path / "traces", tmp_path / "out.trace.gz"
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"psi: {{wakeup: {{enabled: false}}}}\nstatus: {{socket: {sock}}}\npolicy_dirs: []\n"
                   f"recorder: {{dir: {traces}}}\n")
    err = tmp_path / "stderr"
    with err.open("w") as f:
        proc = subprocess.Popen([sys.executable, "-m", "pyoomd", "--procfs", FIXTURE_PROC, "run", "--dry-run",
                                 "--log-format", "json", "--config", str(cfg)], stderr=f, env=ENV, cwd="/")
    try:
        wait_for_event(err, "startup")
        deadline = time.monotonic() + 10
        while not sock.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        r = subprocess.run([sys.executable, "-m", "pyoomd", "status", "--socket", str(sock), "--config", str(cfg),
                            "--dump-trace", str(out)], capture_output=True, text=True, env=ENV, timeout=30,
                           check=False)
        assert r.returncode == 0, r.stderr
        (written,) = wait_for_event(err, "trace_written")
        assert written["path"].endswith("-dump.trace.gz")
        trace = read_trace(str(out))
        assert trace.header["reason"] == "dump" and trace.header["pid"] == proc.pid
        kinds = {e[0] for e in trace.entries}
        assert {"s", "l", "r", "e"} <= kinds  # samples, the self-test's look, the startup event
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0


def test_replay_with_another_config_lower_levels_no_kill(tmp_path: Path, capsys: Any) -> None:
    """The recorded TERM was 20.31 GiB and MemAvailable went down to 20.30:
    with TERM at 20 GiB the same episode needs no kill."""
    from pyoomd.cli.dispatch import main

    cfg = tmp_path / "c.yaml"
    cfg.write_text("memory: {term: 20G, kill: 19G, warn: 21G}\nswap: {term: 0%, kill: 0%}\n"
                   "psi: {wakeup: {enabled: false}}\nstatus: {socket: null}\npolicy_dirs: []\n")
    assert main(["replay", REAL, "--config", str(cfg), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    (run_,) = doc["runs"]
    assert run_["kills"] == [] and [lv["level"] for lv in run_["levels"]] == ["OK", "WARN"]
    assert run_["differences"] == ["victims: the live daemon leak (pid 10); replay none"]
    assert run_["spared"][0]["comm"] == "leak" and run_["spared"][0]["protected_by"] is None


def test_record_without_a_daemon_then_replay(tmp_path: Path, capsys: Any) -> None:
    from pyoomd.cli.dispatch import main

    cfg = tmp_path / "c.yaml"
    cfg.write_text("psi: {wakeup: {enabled: false}}\nstatus: {socket: null}\npolicy_dirs: []\n")
    out = tmp_path / "rec.trace.gz"
    assert main(["--procfs", FIXTURE_PROC, "record", str(out), "--seconds", "1.2", "--config", str(cfg)]) == 0
    trace = read_trace(str(out))
    assert trace.header["reason"] == "record" and trace.header["settings"]["dry_run"] is True
    looks = [e for e in trace.entries if e[0] == "l" and e[2] == FIXTURE_PROC]
    assert len(looks) >= 2  # a whole-table look each second (and the self-test's)
    assert main(["replay", str(out)]) == 0
    assert "the same victims in the same order as the live daemon" in capsys.readouterr().out


def test_a_trace_still_due_at_exit_is_written(tmp_path: Path) -> None:
    procfs = build(tmp_path / "proc", PROCS)
    script = Script(lambda t: max(1.5 * GIB, 6 * GIB - (t - 1000.0) * 0.45 * GIB))
    cfg = settings_from_dict({**SETTINGS, "recorder": {"dir": str(tmp_path / "traces")}})
    ring, rp, rs = recorder.recording(procfs, script, cfg.recorder)
    rp.clock = rs.clock = script.clock
    log = Log()
    d = Daemon(cfg, rp, rs, log, clock=script.clock, sleep=script.sleep)
    d.killer.open_verified = lambda pid, start: os.open("/dev/null", os.O_RDONLY)  # type: ignore[method-assign]
    rec = recorder.attach(d, ring, cfg.recorder, lambda: trace_header(d, rp.root))
    rec.clock = d.vmstat.clock = script.clock
    while not log.named("kill"):
        script.sleep(d.tick())
    rec.stop()  # SIGTERM right after the kill: the trace is not lost
    (written,) = list((tmp_path / "traces").iterdir())
    assert read_trace(str(written)).header["reason"] == "kill"


def test_the_service_may_write_the_default_trace_dir() -> None:
    """ProtectSystem=strict makes /var read-only: StateDirectory= gives the
    recorder /var/lib/pyoomd (recorder.dir's default is below it)."""
    unit = (Path(__file__).parent.parent / "packaging" / "systemd" / "pyoomd.service").read_text()
    assert "\nStateDirectory=pyoomd\n" in unit and "\nStateDirectoryMode=0700\n" in unit
    assert Settings().recorder.dir.startswith("/var/lib/pyoomd/")


def test_replay_output_escapes_hostile_names() -> None:
    doc = {"trace": {"path": "t", "pyoomd": "0", "format": 1, "created": "x", "seconds": 1.0, "samples": 1,
                     "reason": "kill"},
           "runs": [{"label": "l", "ticks": 1, "wall_s": 0.0, "levels": [], "events": [], "spared": [],
                     "kills": [{"t": 1.0, "pid": 5, "comm": "\x1b]0;pwned\x07x", "signal": "SIGTERM",
                                "oom_level": "TERM", "badness": 1, "rules": [], "crossing_to_kill_ms": 1.0,
                                "candidates": []}],
                     "differences": [], "compared_to": "the live daemon", "timing": []}],
           "live": {"kills": [{"t": 1.0, "pid": 5, "comm": "\x1b[2Jy" * 40, "signal": "SIGTERM", "badness": 1}]}}
    out = replay_report.format_report(doc)
    assert "\x1b" not in out and "\x07" not in out and "\\x1b]0;pwned\\x07x" in out
