"""The right victim (issue 8): kills made by pyoomd, earlyoom and nohang in
the four scenarios of integration/test_growth.py, in the same run.

    sudo python3 integration/bench/right_victim.py [--runs N] [--daemons pyoomd earlyoom nohang]

Each scenario is the test's own: the same process sizes, rates,
oom_score_adj, TERM/KILL levels relative to the MemAvailable found at its
start, and the warn level for pyoomd (the others have none).  Every run is
integration/nsrun.py as PID 1 of its own private PID namespace
(``unshare --pid --fork --kill-child --mount-proc``), inside
integration/harness.py's memory-limited safety cgroup, holding its scenario
lock, and bounded to BOUND_S.  nsrun starts the daemon under test
(spec "daemon"; earlyoom with ``-M term,kill``, nohang from the bench's
daemons.py config generator) and watches the scenario's children: a kill is a
child that died by a signal.  pyoomd's JSON kill events are kept beside that.
A run ends 1.5 s after the cause (or, with no growth, any process) died, or
at the timeout.  Daemons alternate: each run starts with the next one.

Prints a table and writes every raw figure to
integration/bench/results/right_victim.json.
"""

from __future__ import annotations

import argparse
import copy
import datetime as _dt
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, ROOT)
from integration import harness, scenes
from integration.bench import daemons

RESULTS = os.path.join(HERE, "results", "right_victim.json")
NSRUN = os.path.join(ROOT, "integration", "nsrun.py")
BOUND_S = 45.0  # a whole scenario, namespace start to teardown
NS_TIMEOUT_S = 36.0  # in the namespace; leaves room for start-up and the daemon's stop inside BOUND_S
LINGER_S = 1.5
RETRIES = 2  # when TERM was never reached (see main)
GRACE_S = 3.0  # nohang max_soft_exit_time, as in the bench (earlyoom has none; pyoomd keeps its default)


def _tabs(n: int) -> list[dict[str, Any]]:
    return [{"rate": 0, "max": 300, "start": 300, "hold": 60, "adj": 300} for _ in range(n)]


# The four scenarios of integration/test_growth.py, spec for spec (their margins
# past TERM: harness.MARGIN_MIB); "roles"
# names the bystanders and hogs in order, "cause" the processes that grow.
SCENARIOS: dict[str, dict[str, Any]] = {
    "tabs_leak": {
        "what": "3 tabs 300 MiB adj 300 + leak 128 MiB/s",
        "spec": {"term_below_mib": 2200, "kill_below_mib": 3000, "warn_below_mib": 1000, "timeout": 40,
                 "bystanders": _tabs(3),
                 "hogs": [{"rate": 128, "max": 3200, "start": 50, "hold": 60, "delay": 0.5}]},
        "roles": {"bystanders": ["tab1", "tab2", "tab3"], "hogs": ["leak"]}, "cause": ["leak"],
    },
    "db_grower": {
        "what": "idle db 2.5 GiB + grower 256 MiB/s",
        "spec": {"term_below_mib": 2560 + 1500, "kill_below_mib": 2560 + 2300, "warn_below_mib": 2700,
                 "timeout": 40, "bystanders": [{"rate": 0, "max": 2560, "start": 2560, "hold": 60}],
                 "hogs": [{"rate": 256, "max": 3400, "start": 100, "hold": 60, "delay": 0.5}]},
        "roles": {"bystanders": ["db"], "hogs": ["grower"]}, "cause": ["grower"],
    },
    "mixed": {
        "what": "2 tabs + db 1.5 GiB + leak 192 MiB/s",
        "spec": {"term_below_mib": 2100 + 1300, "kill_below_mib": 2100 + 2200, "warn_below_mib": 2300,
                 "timeout": 40,
                 "bystanders": _tabs(2) + [{"rate": 0, "max": 1500, "start": 1500, "hold": 60}],
                 "hogs": [{"rate": 192, "max": 3400, "start": 50, "hold": 60, "delay": 0.5}]},
        "roles": {"bystanders": ["tab1", "tab2", "db"], "hogs": ["leak"]}, "cause": ["leak"],
    },
    "no_growth": {
        "what": "300/600/3000 MiB held before the daemon starts, no growth",
        "spec": {"term_below_mib": 2400, "kill_below_mib": 4900, "warn_below_mib": 1000, "timeout": 20,
                 "bystanders": [{"rate": 0, "max": m, "start": m, "hold": 60} for m in (300, 600, 3000)],
                 "hogs": [{"rate": 0, "max": 8, "start": 8, "hold": 30}]},
        "roles": {"bystanders": ["p300", "p600", "p3000"], "hogs": ["sleeper"]}, "cause": [],
    },
}

# Issue 12's held-apart kind of scene: integration/scenes.py's (those of
# integration/test_growth_scenes.py, the random one at scenes.BENCH_SEED).
SCENARIOS.update(scenes.all_scenes())


# -- safety: no killer of ours (or the packages') may act on the host ------------------
def _ns_of(pid: int | str) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/pid")
    except OSError:
        return None


def host_instances() -> list[tuple[int, str]]:
    """earlyoom/nohang processes in the machine's own PID namespace (ours);
    instances inside private namespaces (a benchmark's) are not ours to touch."""
    own = _ns_of("self")
    return [(pid, cmd) for pid, cmd in daemons.running_instances() if _ns_of(pid) == own]


def stop_host_instances() -> None:
    """The packages enable services: stop them, and only the exact host pids."""
    found = host_instances()
    if not found:
        return
    print(f"stopping earlyoom/nohang running on the host: {found}", flush=True)
    if os.path.isdir("/run/systemd/system") and shutil.which("systemctl"):
        subprocess.run(["systemctl", "stop", "earlyoom.service", "nohang.service", "nohang-desktop.service"],
                       capture_output=True, check=False)
    for pid, _ in host_instances():
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    time.sleep(0.5)
    left = host_instances()
    if left:
        raise SystemExit(f"earlyoom/nohang still running on the host, refusing to run: {left}")


def ensure_installed() -> None:
    if os.path.exists(daemons.EARLYOOM_BIN) and os.path.exists(daemons.NOHANG_BIN):
        return
    if shutil.which("apt-get") is None:
        raise SystemExit("earlyoom/nohang missing and no apt-get to install them")
    print("installing earlyoom and nohang (apt-get)", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env, stdout=subprocess.DEVNULL)
    subprocess.run(["apt-get", "install", "-y", "-qq", "earlyoom", "nohang"], check=True, env=env,
                   stdout=subprocess.DEVNULL)


# -- one scenario ---------------------------------------------------------------------
def _oom_kills(cg: harness.SafetyCgroup) -> int | None:
    """Kernel OOM kills in the safety cgroup (not the daemon's doing)."""
    if not cg.path:
        return None
    try:
        with open(os.path.join(cg.path, "memory.oom_control")) as f:
            for line in f:
                if line.startswith("oom_kill "):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def run_ns(spec: dict[str, Any]) -> dict[str, Any]:
    """nsrun.py as PID 1 of a fresh PID namespace, in the safety cgroup, under
    the scenario lock.  --kill-child: if the bound kills unshare, the
    namespace's init gets SIGKILL and the kernel ends everything in it."""
    with harness.scenario_slot():
        stop_host_instances()  # a package's service must not be running beside a scenario
        cg = harness.SafetyCgroup()
        env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
        cmd = ["unshare", "--pid", "--fork", "--kill-child", "--mount-proc", sys.executable, NSRUN, json.dumps(spec)]
        t = time.monotonic()
        try:
            r = subprocess.run(cmd, capture_output=True, timeout=BOUND_S, preexec_fn=cg.enter, env=env, cwd=ROOT,
                               check=False)
        except subprocess.TimeoutExpired:
            return {"error": f"bound of {BOUND_S:g} s reached", "wall_s": round(time.monotonic() - t, 1)}
        finally:
            oom = _oom_kills(cg)
            time.sleep(0.2)
            cg.remove()
    wall = round(time.monotonic() - t, 1)
    if r.returncode != 0 or not r.stdout.strip():
        return {"error": f"rc={r.returncode}", "stderr": r.stderr.decode(errors="replace")[-3000:], "wall_s": wall}
    out = json.loads(r.stdout.decode().strip().splitlines()[-1])
    out["safety_cgroup_oom_kills"] = oom
    out["wall_s"] = wall
    return out


_SIG_LINE = {"earlyoom": re.compile(r"sending (SIG\w+) to process (\d+)"),
             "nohang": re.compile(r"\[ OK \] Sending (SIG\w+) to")}


def figures(name: str, daemon: str, r: dict[str, Any]) -> dict[str, Any]:
    """Kills and victims of one run, by role."""
    sc = SCENARIOS[name]
    if "error" in r:
        return {"error": r["error"]}
    roles: dict[int, str] = {}
    for kind in ("bystanders", "hogs"):
        for entry, role in zip(r[kind], sc["roles"][kind]):
            roles[entry["pid"]] = role
    procs = r["bystanders"] + r["hogs"]
    dead = sorted((p for p in procs if p["returncode"] is not None and p["returncode"] < 0),
                  key=lambda p: (p["died_s"] if p["died_s"] is not None else 1e9))
    died = [roles[p["pid"]] for p in dead]
    signals = [signal.Signals(-p["returncode"]).name for p in dead]
    exited = [roles[p["pid"]] for p in procs if p["returncode"] is not None and p["returncode"] >= 0]
    scores = {roles[p["pid"]]: p.get("oom_score_before") for p in procs}
    known = {k: v for k, v in scores.items() if v is not None}
    kernel_first = max(known, key=lambda k: known[k]) if known else None
    cause = sc["cause"]
    f: dict[str, Any] = {
        "kills": len(dead), "died": died, "died_s": [p["died_s"] for p in dead], "signals": signals,
        "exited_by_itself": exited,
        "cause_died": (all(c in died for c in cause) if cause else None),
        "needless_kills": (sum(1 for d in died if d not in cause) if cause else max(0, len(died) - 1)),
        "oom_score_before_first_death": scores, "kernel_first_choice": kernel_first,
        "term_crossed": r["min_avail_kib"] <= r["term_kib"],
        "overshoot_mib": round(r["overshoot_mib"], 1), "min_avail_below_term_mib": round(
            (r["term_kib"] - r["min_avail_kib"]) / 1024, 1),
        "safety_cgroup_oom_kills": r.get("safety_cgroup_oom_kills"), "wall_s": r.get("wall_s"),
    }
    if "retried" in r:
        f["retried_after_term_not_reached"] = r["retried"]
    if daemon == "pyoomd":
        kills = [e for e in r["events"] if e.get("event") == "kill" and not e.get("dry_run")]
        f["kill_events"] = [{"role": roles.get(k["pid"], f"pid {k['pid']}"), "badness": k.get("badness"),
                             "oom_score": k.get("oom_score"), "growth": k.get("growth"),
                             "episode_kills": k.get("episode_kills", k.get("kills_in_episode"))} for k in kills]
        f["daemon_kills"] = len(kills)
    else:
        pat = _SIG_LINE["nohang" if daemon.startswith("nohang") else daemon]
        sent = [line for _, line in r.get("daemon_lines", []) if pat.search(line)]
        # Signals sent, from its log (nohang may send SIGTERM to the same victim twice).
        f["daemon_kills"] = sum(1 for line in sent if "SIGTERM" in line or "SIGKILL" in line)
        f["signal_lines"] = sent
    if not cause:
        # The kernel's order kept: the first victim is the process with the
        # highest oom_score just before the first death (for pyoomd also:
        # its candidate list is in oom_score order, as the test asserts).
        # Whether one kill sufficed is in "kills"/"needless_kills".
        kept = bool(died) and died[0] == kernel_first
        if daemon == "pyoomd":
            ev = [e for e in r["events"] if e.get("event") == "kill" and not e.get("dry_run")]
            if ev:
                cands = ev[0].get("candidates") or []
                order = [c["pid"] for c in cands]
                by_score = [c["pid"] for c in sorted(cands, key=lambda c: (-c["oom_score"], -c["rss_kib"]))]
                kept = kept and order == by_score
        f["kernel_order_kept"] = kept
    return f


def run_spec(name: str, daemon: str) -> dict[str, Any]:
    spec = copy.deepcopy(SCENARIOS[name]["spec"])
    spec["timeout"] = min(spec["timeout"], NS_TIMEOUT_S)
    spec.update({"watch_children": True, "stop_after_hog_deaths": 1, "linger": LINGER_S, "grace_s": GRACE_S})
    if not SCENARIOS[name]["cause"]:  # no growth: the run ends after the first death, whoever it is
        del spec["stop_after_hog_deaths"]
        spec["stop_after_deaths"] = 1
    if daemon != "pyoomd":
        spec["daemon"] = daemon
    return spec


# -- the table -------------------------------------------------------------------------
def cell(runs: list[dict[str, Any]], scn: str) -> str:
    parts = []
    for f in runs:
        if "error" in f:
            parts.append("error: " + f["error"])
            continue
        s = f"{f['kills']} ({', '.join(f['died']) or 'none'})"
        parts.append(s)
    return "; ".join(parts)


def tables(raw: dict[str, dict[str, list[dict[str, Any]]]], names: list[str]) -> str:
    head = "| scenario | " + " | ".join(f"{d}: kills (died, in order)" for d in names) + " |"
    out = [head, "|---|" + "---|" * len(names)]
    for scn in SCENARIOS:
        if scn not in raw:
            continue
        row = [f"{scn}: {SCENARIOS[scn]['what']}"]
        for d in names:
            row.append(cell([x["figures"] for x in raw[scn].get(d, [])], scn))
        out.append("| " + " | ".join(row) + " |")
    out += ["", ("| scenario | daemon | kills (signal deaths) | kill events / signals sent (its log) | cause died | needless kills "
                 "| kernel's first choice | kernel order kept |"), "|---|---|---|---|---|---|---|---|"]
    for scn in SCENARIOS:
        for d in names:
            for f in (x["figures"] for x in raw.get(scn, {}).get(d, [])):
                if "error" in f:
                    out.append(f"| {scn} | {d} | error: {f['error']} | | | | | |")
                    continue
                cause = "-" if f["cause_died"] is None else ("yes" if f["cause_died"] else "NO")
                kept = "-" if "kernel_order_kept" not in f else ("yes" if f["kernel_order_kept"] else "NO")
                if not f["term_crossed"] and not f["kills"]:
                    f = {**f, "died": ["TERM never reached"]}
                out.append(f"| {scn} | {d} | {f['kills']} ({', '.join(f['died']) or 'none'}) | {f['daemon_kills']} "
                           f"| {cause} | {f['needless_kills']} | {f['kernel_first_choice']} | {kept} |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--daemons", nargs="+", default=["pyoomd", "earlyoom", "nohang"], choices=daemons.DAEMONS)
    ap.add_argument("--scenarios", nargs="+", default=list(SCENARIOS), choices=list(SCENARIOS))
    ap.add_argument("--out", default=RESULTS)
    args = ap.parse_args(argv)
    why = harness.why_not_runnable()
    if why:
        print(f"right_victim: cannot run: {why}", file=sys.stderr)
        return 77
    if any(d != "pyoomd" for d in args.daemons):
        ensure_installed()
    stop_host_instances()
    t_start = time.time()
    raw: dict[str, dict[str, list[dict[str, Any]]]] = {}
    names = list(args.daemons)
    for run in range(args.runs):
        order = names[run % len(names):] + names[: run % len(names)]
        for scn in args.scenarios:
            for d in order:
                r = run_ns(run_spec(scn, d))
                f = figures(scn, d, r)
                for _ in range(RETRIES):
                    if "error" in f or f["term_crossed"] or f["kills"]:
                        break
                    # TERM never reached: memory was freed elsewhere on the
                    # machine meanwhile (work outside the scenario lock).
                    # Not a result; run it again.
                    print(f"run {run + 1} {scn} {d}: TERM never reached, running it again", flush=True)
                    r = {**run_ns(run_spec(scn, d)), "retried": r.get("retried", 0) + 1}
                    f = figures(scn, d, r)
                raw.setdefault(scn, {}).setdefault(d, []).append({"figures": f, "raw": r})
                if "error" in f:
                    print(f"run {run + 1} {scn} {d}: ERROR {r.get('error')} {r.get('stderr', '')[-800:]}", flush=True)
                else:
                    print(f"run {run + 1} {scn} {d}: kills={f['kills']} died={f['died']} at {f['died_s']} s "
                          f"cause_died={f['cause_died']} needless={f['needless_kills']} "
                          f"kernel_first={f['kernel_first_choice']}"
                          + (f" order_kept={f['kernel_order_kept']}" if "kernel_order_kept" in f else "")
                          + f" ({f['wall_s']} s)", flush=True)
        stop_host_instances()  # nothing of ours may have escaped a namespace
    from integration.bench import run as bench_run  # machine() and version, as the bench reports them

    meta = {"date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": bench_run.machine(),
            "versions": {**daemons.versions(), "pyoomd": bench_run._pyoomd_version()}, "runs": args.runs,
            "command": ("sudo python3 integration/bench/right_victim.py "
                        + " ".join(argv if argv is not None else sys.argv[1:])),
            "duration_s": round(time.time() - t_start),
            "method": "scenarios of integration/test_growth.py; kills = children that died by a signal; a run "
                      f"ends {LINGER_S:g} s after the cause (no growth: any process) died, or at "
                      f"{NS_TIMEOUT_S:g} s (no growth: 25 s); pyoomd with its defaults plus the test's warn level, "
                      f"earlyoom -M term,kill, nohang with the bench's generated config (grace {GRACE_S:g} s)"}
    text = tables(raw, names)
    print()
    print(f"{meta['date']}; {meta['machine']['cpus']} CPUs, {meta['machine']['mem_total_gib']} GiB, swap "
          f"{meta['machine']['swap_total_gib']} GiB, kernel {meta['machine']['kernel']}; {meta['versions']}; "
          f"{args.runs} run(s)")
    print(text)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump({"meta": meta, "table": text, "raw": raw}, f, indent=1)
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
