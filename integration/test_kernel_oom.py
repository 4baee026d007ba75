"""The kernel's own OOM kills are reported (issue 11): a hog in a small v1
memory cgroup below the scenario's own (64 MiB) grows past its limit, the
kernel's memcg OOM killer kills it, and the dry-run daemon in the same PID
namespace logs ``kernel_oom_kill`` with the kernel's pid for it, its comm,
kind memcg and the cgroup's path.  nsrun.py creates and removes the cgroup."""

from __future__ import annotations

import os
import signal
import uuid
from pathlib import Path
from typing import Any

import pytest

from integration.harness import V1_MEMORY, events, own_v1_memory_cgroup, run_scenario

LIMIT_MIB = 64
# A name with what the parser must not be misled by: spaces, parentheses, a comma.
COMM = "it) oom (k,x"


def _why_not() -> str | None:
    if not os.access("/dev/kmsg", os.R_OK):
        return "/dev/kmsg is not readable here"
    if own_v1_memory_cgroup() is None or not os.path.isdir(V1_MEMORY):
        return "no v1 memory cgroup hierarchy"
    return None


pytestmark = pytest.mark.skipif(_why_not() is not None, reason=str(_why_not()))


def test_memcg_oom_kill_is_reported() -> None:
    prom = Path(f"/tmp/pyoomd-it-metrics-{uuid.uuid4().hex[:8]}.prom")
    try:
        r = _scene(prom)
        metrics = prom.read_text() if prom.exists() else ""
    finally:
        prom.unlink(missing_ok=True)
    _check(r, metrics)


def _scene(prom: Path) -> dict[str, Any]:
    return run_scenario({
        # Levels far below anything this scene uses: the daemon only watches.
        "term_below_mib": 3000, "kill_below_mib": 3500, "timeout": 20, "dry_run": True,
        "v1_memcg": {"limit_mib": LIMIT_MIB}, "outer_proc": True,
        "hogs": [{"rate": 0, "max": 4 * LIMIT_MIB, "start": 0, "delay": 0.5, "hold": 10, "in_memcg": True,
                  "comm": COMM}],
        "stop_after_events": ["kernel_oom_kill"],
        # The counter, as node_exporter would read it (written at once on the event).
        "config_yaml": f"metrics: {{textfile: {prom}}}\n",
    })


def _check(r: dict[str, Any], metrics: str) -> None:
    hog = r["hogs"][0]
    assert hog["returncode"] == -signal.SIGKILL, r["log_tail"]
    assert hog["kernel_pid"], "the hog's pid in the initial namespace was not found"
    startup = events(r, "startup")[0]
    assert startup["kernel_log"] == "following /dev/kmsg", startup
    kills = events(r, "kernel_oom_kill")
    assert len(kills) == 1, r["log_tail"]
    k = kills[0]
    assert k["level"] == "info", k  # a cgroup's limit: not a failure of pyoomd
    assert (k["kind"], k["pid"], k["comm"]) == ("memcg", hog["kernel_pid"], COMM), k
    assert k["memcg"] == r["v1_memcg_path"] and k["task_memcg"] == r["v1_memcg_path"], k
    assert k["constraint"] == "CONSTRAINT_MEMCG"
    assert k["anon_rss_kib"] + k["file_rss_kib"] + k["shmem_rss_kib"] > (LIMIT_MIB // 2) << 10, k
    assert k["uid"] == os.getuid() and k["oom_score_adj"] == 0
    # Read from /dev/kmsg within a few ms of the kernel's record (measured:
    # 2.6 ms).  The record's time is printk's clock (local_clock), which
    # drifts from CLOCK_MONOTONIC: a CI run on this VM, up 13 h, read
    # -30.5 ms.  So a small negative value is the clocks, not a bug.
    assert -0.25 < k["read_after_s"] < 1.0, k
    assert 'pyoomd_kernel_oom_kills_total{kind="memcg"} 1.0' in metrics, metrics
    assert 'pyoomd_kernel_oom_kills_total{kind="global"} 0.0' in metrics, metrics
    assert not events(r, "kill"), "the daemon chose no victim of its own"
    assert not os.path.exists(V1_MEMORY + r["v1_memcg_path"]), "the cgroup was removed"
