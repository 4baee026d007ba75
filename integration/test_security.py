"""Security against real processes (issue 7), in private PID namespaces.

Name spoofing cannot buy protection: integration/test_policy.py::
test_spoofed_sshd_does_not_get_sshds_protection.  Here: it cannot make
pyoomd kill another user's process in place of the spoofer's."""

from __future__ import annotations

import signal

from integration.harness import MARGIN_MIB, events
from integration.nsfault import NOBODY, run_fault

SIGTERM_RC = -signal.SIGTERM

# The admin protects root's "rootjob" properly (pinned to user root).
PROTECT_ROOTJOB = """\
version: 1
rules:
  - name: keep-rootjob
    match: {comm: "^rootjob$", user: root}
    protect: true
"""


def test_a_spoofer_named_like_a_root_process_is_the_one_killed() -> None:
    # user nobody runs a hog named "rootjob", like root's process beside it,
    # which is larger when the hog starts: the kill must still go to the
    # hog, by pid and start time, and root's rootjob (protected by a pinned
    # rule the spoofer cannot match) must live.
    r = run_fault({
        "term_below_mib": 900, "kill_below_mib": 900 + MARGIN_MIB + 700, "timeout": 30,
        "policies": {"10-keep.yaml": PROTECT_ROOTJOB},
        "procs": [{"rate": 0, "max": 400, "start": 400, "hold": 60, "comm": "rootjob"},
                  {"rate": 0, "max": 64, "start": 64, "hold": 60, "comm": "rootjob", "user": NOBODY}],
        "hogs": [{"rate": 128, "max": 400 + MARGIN_MIB, "start": 50, "hold": 30, "delay": 0.5, "comm": "rootjob",
                  "user": NOBODY}],
        "stop_after_events": ["victim_exited"],
    })
    root_job, nobody_small = r["procs"]
    hog = r["hogs"][0]
    kills = [e for e in events(r, "kill") if not e["dry_run"]]
    assert kills and kills[0]["pid"] == hog["pid"], r["log_tail"]
    assert kills[0]["uid"] == NOBODY and kills[0]["comm"] == "rootjob"
    assert hog["returncode"] == SIGTERM_RC
    assert root_job["returncode"] is None and nobody_small["returncode"] is None
    for k in kills:
        assert k["pid"] != root_job["pid"]
        assert root_job["pid"] not in [c["pid"] for c in k["candidates"]]
