"""YAML policies against real processes, each scenario in its own private PID
namespace (integration/harness.run_scenario), policy files written by nsrun
into a root-owned directory and passed with ``--policy``."""

from __future__ import annotations

import json
import signal

from integration.harness import MARGIN_MIB, events, run_scenario

SIGTERM_RC = -signal.SIGTERM
KEEPER_EXE = "/tmp/pyoomd-it-exe/keeper"  # nsrun's HARDLINK_DIR + comm

PREFER_SMALL = """\
version: 1
rules:
  # the small process is cheap to lose: prefer it to the large one
  - name: prefer-small
    match: {comm: "^smallhog$"}
    adjust: +1500
"""


def _kills(result: dict) -> list[dict]:
    return [e for e in events(result, "kill") if e["dry_run"] is False]


def test_policy_preferring_a_smaller_process_makes_it_the_victim() -> None:
    r = run_scenario({
        "term_below_mib": 900, "kill_below_mib": 900 + MARGIN_MIB + 700, "timeout": 30,
        "policies": {"10-prefer.yaml": PREFER_SMALL},
        "hogs": [
            {"rate": 0, "max": 100, "start": 100, "hold": 30, "comm": "smallhog"},
            {"rate": 128, "max": 800 + MARGIN_MIB, "start": 50, "hold": 30, "delay": 0.5},
        ],
        "stop_after_events": ["victim_exited"],
    })
    small, big = r["hogs"]
    start = events(r, "startup")[0]
    assert start["policy_rules"] == ["prefer-small"], r["log_tail"]
    kills = _kills(r)
    assert kills and kills[0]["pid"] == small["pid"], r["log_tail"]
    assert kills[0]["rules"] == ["prefer-small"]
    assert kills[0]["badness"] > kills[0]["oom_score"] + 1000
    # without the policy the larger process ranks first
    by_pid = {c["pid"]: c for c in kills[0]["candidates"]}
    assert by_pid[big["pid"]]["oom_score"] > by_pid[small["pid"]]["oom_score"]
    assert small["returncode"] == SIGTERM_RC
    # big may follow as the second victim (it keeps growing); never the first


def test_protected_process_survives_while_the_next_one_dies() -> None:
    # The keeper is the largest process and runs a distinct executable (a
    # hard link): the rule pins that exe and user root.
    policy = f"""\
version: 1
rules:
  - name: keep-keeper
    match: {{exe: {KEEPER_EXE}, user: root}}
    protect: true
"""
    r = run_scenario({
        "term_below_mib": 900, "kill_below_mib": 900 + MARGIN_MIB + 700, "timeout": 30,
        "policies": {"keep.yaml": policy},
        "hogs": [
            {"rate": 0, "max": 700, "start": 700, "hold": 30, "comm": "keeper", "hardlink": True},
            {"rate": 128, "max": 200 + MARGIN_MIB, "start": 50, "hold": 30, "delay": 0.5},
        ],
        "stop_after_events": ["victim_exited"],
    })
    keeper, grower = r["hogs"]
    assert keeper["returncode"] is None, r["log_tail"]
    assert grower["returncode"] == SIGTERM_RC, r["log_tail"]
    kills = _kills(r)
    assert [k["pid"] for k in kills] == [grower["pid"]]
    assert keeper["pid"] not in [c["pid"] for c in kills[0]["candidates"]]


def test_spoofed_sshd_does_not_get_sshds_protection() -> None:
    # A hog started as "sshd" (exec through a symlink: comm says sshd,
    # /proc/PID/exe says python).  The real sshd's rule pins exe and user;
    # a second file tries to protect by name alone and is refused.
    real = """\
version: 1
rules:
  - name: keep-sshd
    match: {exe: /usr/sbin/sshd, user: root}
    protect: true
"""
    by_name = """\
version: 1
rules:
  - name: keep-sshd-by-name
    match: {comm: "^sshd$"}
    protect: true
"""
    r = run_scenario({
        "term_below_mib": 600, "kill_below_mib": 1400, "timeout": 25,
        "policies": {"10-sshd.yaml": real, "20-by-name.yaml": by_name},
        "bystanders": [{"max": 32}],
        "hogs": [{"rate": 256, "max": 600 + MARGIN_MIB, "start": 100, "hold": 20, "comm": "sshd"}],
        "stop_after_events": ["victim_exited"],
    })
    hog = r["hogs"][0]
    refused = events(r, "policy_rule_refused")
    assert refused and "keep-sshd-by-name" in refused[0]["message"], r["log_tail"]
    assert events(r, "startup")[0]["policy_rules"] == ["keep-sshd"]
    kills = _kills(r)
    assert kills and kills[0]["pid"] == hog["pid"], r["log_tail"]
    assert kills[0]["comm"] == "sshd" and kills[0]["rules"] == []
    assert hog["returncode"] == SIGTERM_RC
    assert all(b["returncode"] is None for b in r["bystanders"])


def test_sighup_with_a_broken_file_keeps_the_old_policy() -> None:
    # After start, the file is replaced by one with a bad regex (and without
    # prefer-small) and the daemon gets SIGHUP: it logs the error and keeps
    # the old rule, which then still picks the small process.
    broken = """\
version: 1
rules:
  - name: typo
    match: {comm: "^(big"}
    adjust: +1500
"""
    r = run_scenario({
        "term_below_mib": 900, "kill_below_mib": 900 + MARGIN_MIB + 700, "timeout": 30,
        "policies": {"10-prefer.yaml": PREFER_SMALL},
        "reload_before_hogs": {"10-prefer.yaml": broken},
        "hogs": [
            {"rate": 0, "max": 100, "start": 100, "hold": 30, "comm": "smallhog"},
            {"rate": 128, "max": 800 + MARGIN_MIB, "start": 50, "hold": 30, "delay": 0.5},
        ],
        "stop_after_events": ["victim_exited"],
    })
    small, _big = r["hogs"]
    failed = events(r, "reload_failed")
    assert failed, r["log_tail"]
    assert "10-prefer.yaml:4:" in failed[0]["error"] and "typo" in failed[0]["error"]
    assert failed[0]["policy_rules"] == ["prefer-small"]
    assert not events(r, "reloaded")
    kills = _kills(r)
    assert kills and kills[0]["pid"] == small["pid"], r["log_tail"]
    assert kills[0]["rules"] == ["prefer-small"]
    assert small["returncode"] == SIGTERM_RC


def test_explain_and_rank_show_the_policy_in_the_live_namespace() -> None:
    r = run_scenario({
        "term_below_mib": 100, "kill_below_mib": 200, "timeout": 20,
        "policies": {"10-prefer.yaml": PREFER_SMALL},
        "hogs": [{"rate": 0, "max": 300, "start": 300, "hold": 30},
                 {"rate": 0, "max": 50, "start": 50, "hold": 30, "comm": "smallhog"}],
        "commands": [["rank", "--json", "--top", "3", "--policy", "{policy_dir}"],
                     ["explain", "--json", "--policy", "{policy_dir}", "1", "3"],
                     ["check", "{policy_dir}"]],
    })
    rank, explain, check = r["commands"]
    assert rank["rc"] == 0, rank["stderr"]
    _big, small = r["hogs"]
    top = json.loads(rank["stdout"])["candidates"][0]
    assert top["pid"] == small["pid"] and top["rules"] == ["prefer-small"]
    assert explain["rc"] == 0, explain["stderr"]
    pid1, small_ex = json.loads(explain["stdout"])
    assert "never a candidate" in pid1["why"]
    if small_ex["pid"] == small["pid"]:  # pids are assigned in order: 3 is the small hog
        assert small_ex["rank"] == 1 and small_ex["rules"][0]["effects"] == ["adjust +1500"]
    assert check["rc"] == 0 and "ok, 1 rules" in check["stdout"]
