"""Traces (TRACE.md): ``pyoomd replay``, ``pyoomd record`` and ``pyoomd
status --dump-trace``."""

from __future__ import annotations

import argparse
import sys
from typing import Any, cast

from ..daemon.launch import open_sampler
from ..errors import EXIT_FAILURE, EXIT_OK, EXIT_UNAVAILABLE
from ..policy.load import load_policies
from ..sense.sample import Sampler
from .options import load_policies_for, settings_for
from .output import print_json
from .scoring import tool_procfs


def cmd_replay(args: argparse.Namespace) -> int:
    """``pyoomd replay TRACE``: the daemon's code over a recorded trace (pyoomd/cli/replay.py)."""
    import time

    from ..errors import EXIT_CONFIG, EXIT_DATAERR
    from ..policy.rules import loaded_from_plan
    from ..settings.load import load_config
    from ..settings.plan import settings_from_plan
    from ..trace import TraceError, read_trace
    from . import replay, replay_report

    try:
        trace = read_trace(args.trace)
    except TraceError as e:
        print(f"pyoomd: {e}", file=sys.stderr)
        return EXIT_DATAERR
    h = trace.header
    recorded_settings = settings_from_plan(h["settings"])
    recorded_policy = loaded_from_plan(h["policy"]) if h.get("policy") else None
    runs: list[tuple[str, Any, Any]] = []
    new_settings = load_config(args.config) if args.config else recorded_settings
    new_policy = load_policies(args.policy) if args.policy else recorded_policy
    changed = bool(args.config or args.policy)
    label = ", ".join(x for x in (f"config {args.config}" if args.config else "",
                                  f"policy {' '.join(args.policy)}" if args.policy else "") if x) or "the recorded plan"
    if args.compare and changed:
        runs.append(("the recorded plan", recorded_settings, recorded_policy))
    elif args.compare:
        print("pyoomd: --compare needs --config or --policy (what to compare the recorded plan with)",
              file=sys.stderr)
        return EXIT_CONFIG
    runs.append((label, new_settings, new_policy))
    live = replay_report.live_rows(trace)
    doc: dict[str, Any] = {"trace": _trace_summary(trace), "runs": [],
                           "live": {"kills": live, "levels": replay_report.live_levels(trace, trace.t0)}}
    first: list[dict[str, Any]] | None = None
    for name, settings, policy in runs:
        t0 = time.perf_counter()
        res = replay.run(trace, settings, policy)
        r = replay_report.report(trace, res, name)
        r["wall_s"] = round(time.perf_counter() - t0, 4)
        ref, ref_name = (first, "the recorded plan") if first is not None else (live, "the live daemon")
        r["compared_to"] = ref_name
        r["differences"] = replay_report.differences(ref, r["kills"], ref_name)
        r["timing"] = replay_report.timing(ref, r["kills"])
        if first is None and args.compare:
            first = r["kills"]
        doc["runs"].append(r)
    if args.json:
        print_json(doc)
    else:
        print(replay_report.format_report(doc))
    return EXIT_OK


def _trace_summary(trace: Any) -> dict[str, Any]:
    import time

    h = trace.header
    return {"path": trace.path, "pyoomd": h.get("pyoomd"), "format": h.get("version"),
            "created": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(h.get("created", 0))),
            "seconds": round(trace.t1 - trace.t0, 3), "samples": sum(1 for e in trace.entries if e[0] == "s"),
            "entries": len(trace.entries), "reason": h.get("reason"), "victim": h.get("victim"),
            "recorded_by_pid": h.get("pid"), "thresholds": h.get("thresholds")}


def cmd_record(args: argparse.Namespace) -> int:
    """``pyoomd record FILE``: a dry-run daemon's inputs for N seconds, with
    a whole-table look every --look-every seconds, written as a trace."""
    import time

    from ..daemon import Daemon
    from ..daemon.launch import trace_header
    from ..report import recorder
    from ..report.log import configure, get_logger
    from ..settings.plan import settings_from_plan, settings_to_plan
    from ..trace import write_trace

    settings = settings_for(args)
    plan = settings_to_plan(settings)
    plan["dry_run"] = True
    plan["recorder"] = dict(plan["recorder"], seconds=max(1.0, args.seconds + 5),
                            memory_mib=max(64.0, plan["recorder"]["memory_mib"]))
    # A RecordingSampler has Sampler's methods (report/recorder.py): Daemon
    # takes either, though its annotation names only the original.
    settings_rt = settings_from_plan(plan)
    loaded = load_policies_for(args, settings)
    procfs = tool_procfs(args)
    configure("console")
    ring, rp, rs = recorder.recording(procfs, open_sampler(procfs, settings.reader), settings_rt.recorder)
    d = Daemon(settings_rt, rp, cast(Sampler, rs), get_logger(), clock=time.monotonic, sleep=time.sleep)
    d.use_policies(loaded)
    recorder.attach(d, ring, settings_rt.recorder, lambda: trace_header(d, rp.root), write_on_kill=False)
    end = time.monotonic() + args.seconds
    next_look = 0.0
    try:
        while time.monotonic() < end:
            now = time.monotonic()
            if now >= next_look:  # every process read, as a scan of everything would
                d.scan(top_n=1_000_000)
                next_look = now + args.look_every
            pause = d.tick()
            time.sleep(max(0.0, min(pause, next_look - time.monotonic(), end - time.monotonic())))
    except KeyboardInterrupt:
        pass
    header = dict(trace_header(d, rp.root), reason="record", victim=None)
    entries = recorder.entries_of(*ring.snapshot())
    info = write_trace(args.file, header, entries)
    print(f"wrote {info['path']}: {info['entries']} entries over {info['seconds']} s, {info['bytes']} bytes",
          file=sys.stderr)
    return EXIT_OK


# `status --dump-trace` waits this long for the daemon's trace (writing 2 MiB
# of ring takes ~0.2 s here; the idle wait is woken by the signal).
DUMP_WAIT_S = 10.0


def dump_trace(socket_path: str, out: str) -> int:
    """The daemon's pid from the status socket's peer credentials (as our PID
    namespace sees it, not as the daemon says), SIGUSR1 to it, then the new
    ``*-dump.trace.gz`` in its recorder directory (from the status document)
    copied to ``out``."""
    import json
    import os
    import shutil
    import signal
    import socket
    import struct
    import time

    from ..trace import TRACE_SUFFIX

    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(5.0)
            s.connect(socket_path)
            pid = struct.unpack("3i", s.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))[0]
            chunks = []
            while chunk := s.recv(65536):
                chunks.append(chunk)
        doc = json.loads(b"".join(chunks))
    except (OSError, ValueError) as e:
        print(f"pyoomd: cannot read the status socket {socket_path}: {e} (is pyoomd running? are you root?)",
              file=sys.stderr)
        return EXIT_UNAVAILABLE
    rec = doc.get("recorder") or {}
    if not rec.get("enabled") or pid <= 0:
        print("pyoomd: the daemon's flight recorder is off (recorder: {enabled: false}) or unknown to it",
              file=sys.stderr)
        return EXIT_UNAVAILABLE
    d = rec["dir"]
    before = set(os.listdir(d)) if os.path.isdir(d) else set()
    os.kill(pid, signal.SIGUSR1)
    deadline = time.monotonic() + DUMP_WAIT_S
    while time.monotonic() < deadline:
        time.sleep(0.05)
        new = sorted(n for n in (os.listdir(d) if os.path.isdir(d) else ())
                     if n not in before and n.endswith("-dump" + TRACE_SUFFIX))
        if new:
            shutil.copyfile(os.path.join(d, new[-1]), out)
            print(f"wrote {out} (the daemon's {os.path.join(d, new[-1])})", file=sys.stderr)
            return EXIT_OK
    print(f"pyoomd: no trace appeared in {d} within {DUMP_WAIT_S:g}s (see the daemon's trace_failed event)",
          file=sys.stderr)
    return EXIT_FAILURE
