"""The flight recorder and replay on real episodes (issue 16): a growth
scene and a core scene run live with the recorder on; the trace the kill
left is replayed with the same plan (same victim, same order of events,
the same sample crossing, the kill no later than one sampling interval
after the live one) and with a policy that
protects the recorded victim (the runner-up of the live table is named)."""

from __future__ import annotations

import json
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from typing import Any

import pytest

from integration.harness import MARGIN_MIB, events, run_scenario, why_not_runnable
from pyoomd.cli import replay, replay_report
from pyoomd.policy.load import load_policies
from pyoomd.policy.rules import loaded_from_plan
from pyoomd.settings.plan import settings_from_plan
from pyoomd.trace import read_trace

pytestmark = pytest.mark.skipif(why_not_runnable() is not None, reason=str(why_not_runnable()))

ORDER_EVENTS = ("low_memory", "kill", "victim_exited", "memory_recovered")


@pytest.fixture
def trace_dir() -> Iterator[str]:
    d = tempfile.mkdtemp(prefix="pyoomd-it-traces-")
    yield d
    shutil.rmtree(d, ignore_errors=True)


def _live(spec: dict[str, Any], trace_dir: str) -> tuple[dict[str, Any], str]:
    spec = dict(spec, config_yaml=f"recorder: {{dir: {trace_dir}}}\n", linger=3.0)
    r = run_scenario(spec)
    written = events(r, "trace_written")
    assert written, r["log_tail"][-10:]
    return r, written[0]["path"]


def _replay(path: str, loaded: Any = None) -> tuple[Any, replay.Result, float]:
    trace = read_trace(path)
    h = trace.header
    t0 = time.perf_counter()
    res = replay.run(trace, settings_from_plan(h["settings"]),
                     loaded if loaded is not None else loaded_from_plan(h["policy"]))
    return trace, res, time.perf_counter() - t0


def _crossing_interval(trace: Any, t_cross: float) -> float:
    """The sampling interval in force at the crossing: the gap between the
    recorded sample at the crossing and the one before it."""
    times = [e[1] for e in trace.entries if e[0] == "s"]
    i = max(1, min(range(len(times)), key=lambda k: abs(times[k] - t_cross)))
    return times[i] - times[i - 1]


def _check_same(r: dict[str, Any], path: str) -> None:
    trace, res, wall = _replay(path)
    live = replay_report.live_rows(trace)
    got = replay_report.replay_rows(trace, res)
    live_kills = [k for k in events(r, "kill") if not k["dry_run"]]
    assert [k["pid"] for k in got] == [k["pid"] for k in live_kills] == [k["pid"] for k in live], (got, live)
    live_order = [ev for _, ev, _ in trace.events() if ev in ORDER_EVENTS]
    replay_order = [ev for _, _, ev, _ in res.events if ev in ORDER_EVENTS]
    assert replay_order == live_order[:len(replay_order)] and len(replay_order) >= 3, (replay_order, live_order)
    interval = _crossing_interval(trace, trace.t0 + live[0]["crossing_t"])
    d_cross = abs(got[0]["crossing_t"] - live[0]["crossing_t"])
    d_kill = abs(got[0]["crossing_to_kill_ms"] - live[0]["crossing_to_kill_ms"]) / 1000
    print(f"replay {wall * 1000:.1f} ms for {trace.t1 - trace.t0:.1f} s of trace ({len(trace.entries)} entries); "
          f"crossing {got[0]['crossing_t']:.4f} vs live {live[0]['crossing_t']:.4f} s, crossing->kill "
          f"{got[0]['crossing_to_kill_ms']} vs {live[0]['crossing_to_kill_ms']} ms, interval {interval * 1000:.1f} ms")
    assert d_cross <= interval + 1e-4  # the same sample crosses TERM
    # The replay's clock moves by reads only (the mean recorded time of one,
    # replay.py); the live figure also holds the scoring and the log's
    # writing, and the machine's noise (one run: 6.5 ms live, 1.3 replay,
    # where another run of the same scene took 2.0 ms live).  So: never
    # later than the live kill by more than one sampling interval.  (Not
    # "within one interval of the crossing": the kill's sample is the
    # killer's last look, taken after the scoring, and under pressure the
    # interval shrinks to ~2 ms, less than one scoring of a busy /proc: a
    # CI run on a busy machine had 2.6 ms replayed, 3.0 live, interval 2.4.)
    assert got[0]["crossing_to_kill_ms"] / 1000 <= live[0]["crossing_to_kill_ms"] / 1000 + interval + 1e-4, d_kill
    assert wall < 1.0


def _check_protected(r: dict[str, Any], path: str, tmp_dir: str) -> None:
    kill = next(k for k in events(r, "kill") if not k["dry_run"])
    runner_up = next(c for c in kill["candidates"] if c["pid"] != kill["pid"])
    pol = f"{tmp_dir}/keep-victim.yaml"
    with open(pol, "w") as f:
        f.write("version: 1\nrules:\n  - name: keep-victim\n"
                f"    match: {{cmdline: {json.dumps('^' + re.escape(kill['cmdline']) + '$')}, user: root}}\n"
                "    protect: true\n")
    _trace, res, _ = _replay(path, load_policies([pol]))
    got = [f for _, _, ev, f in res.events if ev == "kill"]
    assert got and got[0]["pid"] == runner_up["pid"], ([(g["pid"], g["comm"]) for g in got], runner_up)
    assert all(c["pid"] != kill["pid"] for c in got[0]["candidates"])


def test_growth_scene_replays_to_the_same_victim(trace_dir: str) -> None:
    # test_growth.py's first scene: three tabs at adj 300 and a leak.
    tabs = [{"rate": 0, "max": 300, "start": 300, "hold": 60, "adj": 300} for _ in range(3)]
    leak = {"rate": 128, "max": 2200 + MARGIN_MIB, "start": 50, "hold": 60, "delay": 0.5}
    r, path = _live({
        "term_below_mib": 2200, "kill_below_mib": 2200 + MARGIN_MIB + 700, "warn_below_mib": 1000,
        "timeout": 45, "bystanders": tabs, "hogs": [leak],
    }, trace_dir)
    assert [k["pid"] for k in events(r, "kill") if not k["dry_run"]] == [r["hogs"][0]["pid"]]
    _check_same(r, path)
    _check_protected(r, path, trace_dir)


def test_core_scene_replays_to_the_same_victim(trace_dir: str) -> None:
    # test_core.py's steady hog with two bystanders.
    r, path = _live({
        "term_below_mib": 600, "kill_below_mib": 600 + MARGIN_MIB + 700, "timeout": 30,
        "bystanders": [{"max": 32}, {"max": 48}],
        "hogs": [{"rate": 256, "max": 600 + MARGIN_MIB, "start": 100, "hold": 20}],
    }, trace_dir)
    assert [k["pid"] for k in events(r, "kill") if not k["dry_run"]] == [r["hogs"][0]["pid"]]
    _check_same(r, path)
    _check_protected(r, path, trace_dir)
