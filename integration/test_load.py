"""Load (issue 7): ten hogs at once, a fork storm, and a 60-second soak, each
in a private PID namespace inside the memory-limited safety cgroup."""

from __future__ import annotations

import signal

from integration import soak
from integration.harness import MARGIN_MIB, events
from integration.nsfault import run_fault

SIGTERM_RC = -signal.SIGTERM
HOGS, HOG_MIB, TERM_BELOW_MIB = 10, 250, 1200
HOG_RATE_MIB_S = 50
# Each hog is a Python interpreter (~10 MiB) around its HOG_MIB.
HOG_OVERHEAD_MIB = 12
# The fork storm's bound, TERM crossed (low_memory) -> victim gone.  Measured
# on this 2-CPU machine: 0.10 s with ~8,700 forks (about 3,000/s) beside it;
# 2 s leaves room for a loaded CI host, and is still well inside the grace.
STORM_BOUND_S = 2.0


def _kills(r: dict) -> list[dict]:
    return [e for e in events(r, "kill") if not e["dry_run"]]


def test_ten_hogs_are_killed_one_at_a_time_largest_first_and_no_more_than_needed() -> None:
    r = run_fault({
        "term_below_mib": TERM_BELOW_MIB, "kill_below_mib": 2400, "timeout": 16,
        "hogs": [{"rate": HOG_RATE_MIB_S, "max": HOG_MIB, "start": 10, "hold": 30} for _ in range(HOGS)],
        "linger": 3.0,
    })
    kills = _kills(r)
    # Needed, from what was measured at the end: the memory the hogs may use
    # with MemAvailable above TERM (what is available now plus what the
    # survivors hold), divided by a full hog's size (its interpreter included).
    alive = [h["rss_kib"] for h in r["hogs"] if h["returncode"] is None and h["rss_kib"]]
    full_kib = max(alive) if alive else (HOG_MIB + HOG_OVERHEAD_MIB) << 10
    budget_kib = r["avail_end_kib"] + sum(alive) - r["term_kib"]
    needed = HOGS - budget_kib // full_kib
    print(f"kills={len(kills)} needed={needed} full_hog={full_kib >> 10} MiB budget={budget_kib >> 10} MiB")
    assert r["avail_end_kib"] >= r["term_kib"]  # memory recovered
    # At most one more than needed.  "Needed" is judged at the end, with all
    # freed memory back; on this VM about half of a victim's memory shows in
    # MemAvailable at once and the rest comes back over seconds (the balloon
    # reports freed pages to the host first), while nine hogs keep growing:
    # the last kill can be decided on memory that later reappears.  Seen
    # here: exactly needed (7/7) and one more (6/5, 8/7).
    assert needed <= len(kills) <= needed + 1, [(k["pid"], k["rss_kib"]) for k in kills]
    dead = [h for h in r["hogs"] if h["returncode"] is not None]
    assert len(dead) == len(kills) and all(h["returncode"] == SIGTERM_RC for h in dead)
    hog_pids = {h["pid"] for h in r["hogs"]}
    for k in kills:
        assert k["pid"] in hog_pids
        # Largest first: no candidate it saw was bigger by more than what a hog
        # grows while the snapshot reads them one after the other (equal hogs,
        # 50 MiB/s each: a CI run on a busy machine saw 5 MiB, 2.3 %, between
        # the victim and the next one; a clean clone with the fast suite beside
        # it, 15 MiB: 300 ms of growth).  Slack: 500 ms of growth, 25 MiB,
        # still well under the spread of sizes the hogs' staggered starts give.
        biggest = max(c["rss_kib"] for c in k["candidates"])
        assert biggest - k["rss_kib"] <= HOG_RATE_MIB_S * 0.5 * 1024, k["candidates"]
    # one at a time: each kill is followed by its victim's exit before the next kill
    seq = [(e["event"], e["pid"]) for e in r["events"] if e.get("event") in ("kill", "victim_exited")]
    for i in range(0, len(seq), 2):
        assert seq[i][0] == "kill" and seq[i + 1] == ("victim_exited", seq[i][1]), seq


def test_a_fork_storm_does_not_delay_the_kill_past_the_bound() -> None:
    r = run_fault({
        "term_below_mib": 600, "kill_below_mib": 1400, "timeout": 20,
        "procs": [{"fault": ["fork-storm", 10], "capture_stderr": True}],
        "hogs": [{"rate": 256, "max": 600 + MARGIN_MIB, "start": 50, "hold": 20, "delay": 2.0}],
    })
    forked = int(r["proc_stderr"][0].split()[-1])  # its last progress line
    hog = r["hogs"][0]
    assert hog["returncode"] == SIGTERM_RC, r["log_tail"]
    (kill,) = _kills(r)
    assert kill["pid"] == hog["pid"]
    low = events(r, "low_memory")[0]["_t"]
    gone = events(r, "victim_exited")[0]["_t"]
    print(f"forked={forked} low_memory->victim_exited={gone - low:.3f}s")
    assert forked >= 2000  # thousands of short-lived processes really ran beside it
    assert low < 10  # the hog crossed TERM while the storm was on
    assert gone - low < STORM_BOUND_S


def test_soak_60_seconds() -> None:
    summary = soak.check(soak.soak(60))
    print(summary)
    assert summary["problems"] == [], summary
    assert summary["cycles"] >= 5 and summary["right_kills"] == summary["kills"] == summary["cycles"]
