"""What a replay says (``pyoomd replay``): the kills and levels of the live
daemon and of each replay, their differences and timing, and the report
as text."""

from __future__ import annotations

import bisect
from typing import Any

from ..trace import Trace
from .replay import Result


def _rel(t: float, t0: float) -> float:
    return round(t - t0, 4)


def _kill_rows(events: list[tuple[float, str, dict[str, Any]]], t0: float,
               sample_times: list[float] | None = None,
               levels: list[tuple[float, str]] | None = None) -> list[dict[str, Any]]:
    """Kills with their crossing and fate.  The crossing is the sample the
    level went to TERM (or KILL) on, the kill the sample the killer took
    just before the signal (both live and in the replay: the live event
    times also include the log's writing, the replay's do not)."""
    times = sample_times or []
    rows: list[dict[str, Any]] = []
    crossing: float | None = None
    changes = sorted(levels or [])
    prev_level = "OK"
    ci = 0
    for t, ev, f in events:
        while ci < len(changes) and changes[ci][0] <= t:
            lt, lv = changes[ci]
            if lv in ("TERM", "KILL") and prev_level not in ("TERM", "KILL"):
                crossing = _sample_before(times, lt)
            prev_level, ci = lv, ci + 1
        if ev == "kill":
            at = _sample_before(times, t) if times else t
            rows.append({"t": _rel(t, t0), "pid": f.get("pid"), "comm": f.get("comm"), "signal": f.get("signal"),
                         "badness": f.get("badness"), "rules": f.get("rules", []),
                         "oom_level": f.get("oom_level"), "candidates": f.get("candidates", []),
                         "crossing_t": _rel(crossing, t0) if crossing is not None else None,
                         "crossing_to_kill_ms": round((at - crossing) * 1000, 1) if crossing is not None else None})
        elif ev in ("victim_exited", "victim_stuck", "kill_skipped"):
            for r in reversed(rows):
                if r["pid"] == f.get("pid") and "fate" not in r:
                    r["fate"], r["fate_t"] = ev, _rel(t, t0)
                    r["exit_ms"] = f.get("ms")
                    break
    return rows


def _sample_before(times: list[float], t: float) -> float:
    i = bisect.bisect_right(times, t + 1e-9) - 1
    return times[i] if i >= 0 else t


def live_rows(trace: Trace) -> list[dict[str, Any]]:
    """The live daemon's kills (see _kill_rows)."""
    times = [e[1] for e in trace.entries if e[0] == "s"]
    levels = [(e[1], e[2]) for e in trace.entries if e[0] == "L"]
    return _kill_rows(trace.events(), trace.t0, times, levels)


def replay_rows(trace: Trace, res: Result) -> list[dict[str, Any]]:
    return _kill_rows([(t, ev, f) for t, _, ev, f in res.events], trace.t0, res.sample_times,
                      [(t, lv) for t, lv, _, _ in res.levels])


def live_levels(trace: Trace, t0: float) -> list[dict[str, Any]]:
    return [{"t": _rel(e[1], t0), "level": e[2], "reason": e[3]} for e in trace.entries if e[0] == "L"]


def report(trace: Trace, res: Result, label: str) -> dict[str, Any]:
    t0 = trace.t0
    return {
        "label": label,
        "ticks": res.ticks,
        "levels": [{"t": _rel(t, t0), "level": lv, "reason": why, "mem_available_kib": kib}
                   for t, lv, why, kib in res.levels],
        "kills": replay_rows(trace, res),
        "spared": [dict(x, t=_rel(x["t"], t0)) for x in res.spared],
        "events": [{"t": _rel(t, t0), "event": ev, **{k: v for k, v in f.items() if k != "candidates"}}
                   for t, _, ev, f in res.events if ev not in ("kill",)],
    }


def differences(ref: list[dict[str, Any]], new: list[dict[str, Any]], ref_name: str) -> list[str]:
    """How the victims in ``new`` differ from ``ref`` (who, in which order)."""
    a = [(k["pid"], k["comm"]) for k in ref]
    b = [(k["pid"], k["comm"]) for k in new]
    return [] if a == b else [f"victims: {ref_name} {_names(a)}; replay {_names(b)}"]


def timing(ref: list[dict[str, Any]], new: list[dict[str, Any]]) -> list[str]:
    """Kill by kill, when (for the kills of the same process in both)."""
    out = []
    for i, (x, y) in enumerate(zip(ref, new)):
        if (x["pid"], x["comm"]) != (y["pid"], y["comm"]):
            break
        out.append(f"kill {i + 1} {safe(y['comm'])} (pid {y['pid']}): at {y['t']:.3f}s ({(y['t'] - x['t']) * 1000:+.1f} ms), "
                   f"crossing->kill {y['crossing_to_kill_ms']} ms ({x['crossing_to_kill_ms']} ms)")
    return out


def _names(k: list[tuple[int, str]]) -> str:
    return ", ".join(f"{safe(c)} (pid {p})" for p, c in k) if k else "none"


# Names are chosen by whoever started the process: at most this many
# characters reach the terminal, escaped as rank/explain/watch do.
NAME_MAX = 64


def safe(text: Any) -> str:
    """A process name for a terminal: bounded, escaped (pyoomd.textsafe)."""
    from ..textsafe import cell

    return cell(str(text)[:NAME_MAX])


def format_report(doc: dict[str, Any]) -> str:
    tr = doc["trace"]
    lines = [(f"trace {tr['path']}: pyoomd {tr['pyoomd']}, format {tr['format']}, recorded {tr['created']}, "
              f"{tr['seconds']:.1f} s, {tr['samples']} samples, reason {tr['reason']}")]
    for run_ in doc["runs"]:
        lines.append("")
        lines.append(f"replay with {run_['label']}: {run_['ticks']} ticks in {run_['wall_s'] * 1000:.0f} ms")
        lines += _timeline(run_)
    lines.append("")
    lines.append("live daemon (as recorded):")
    for k in doc["live"]["kills"]:
        lines.append(f"  {k['t']:9.3f}s  kill {safe(k['comm'])} (pid {k['pid']}) {k['signal']} badness {k['badness']}"
                     + (f", {k['fate']} at {k['fate_t']:.3f}s" if "fate" in k else ""))
    if not doc["live"]["kills"]:
        lines.append("  no kill")
    for run_ in doc["runs"]:
        diff = run_["differences"]
        lines.append("")
        if diff:
            lines.append(f"{run_['label']}: differs from {run_['compared_to']}:")
            lines += [f"  {d}" for d in diff]
        else:
            lines.append(f"{run_['label']}: the same victims in the same order as {run_['compared_to']}")
        for x in run_.get("spared", []):
            why = (f"protected by rule {x['protected_by']}" if x["protected_by"] else
                   f"rules: {', '.join(x['rules'])}, adjust {x['adjust']:+d}" if x["rules"] else "no policy rule matches it; it ranked lower")
            lines.append(f"  {safe(x['comm'])} (pid {x['pid']}), killed live at {x['t']:.3f}s, left alive: {why}")
        if run_["timing"]:
            lines.append("  when (theirs in brackets):")
            lines += [f"    {t}" for t in run_["timing"]]
    return "\n".join(lines)


def _timeline(run_: dict[str, Any]) -> list[str]:
    rows: list[tuple[float, list[str]]] = []
    for lv in run_["levels"]:
        rows.append((lv["t"], [(f"level {lv['level']:<4}  MemAvailable {lv['mem_available_kib'] / 1048576:.2f} GiB"
                                f"  ({lv['reason']})")]))
    for k in run_["kills"]:
        out = [f"kill {safe(k['comm'])} (pid {k['pid']}) {k['signal']} at {k['oom_level']}, badness {k['badness']}, "
               f"rules: {', '.join(k['rules']) or '-'}"
               + (f", {k['crossing_to_kill_ms']} ms after the crossing" if k.get("crossing_to_kill_ms") is not None
                  else "")]
        out.append("    badness  oom_score   adj   RSS MiB  growth  rules  comm (pid)")
        for c in k["candidates"]:
            out.append(f"    {int(c['badness']):7d}  {int(c['oom_score']):9d}  {int(c['oom_score_adj']):4d}  "
                       f"{c['rss_kib'] / 1024:8.0f}  {int(c.get('growth_points') or 0):+6d}  "
                       f"{','.join(c.get('rules', [])) or '-':<5}  {safe(c['comm'])} ({c['pid']})")
        if "fate" in k:
            out.append(f"    {k['fate']} at {k['fate_t']:.3f}s" + (f" after {k['exit_ms']} ms" if k.get("exit_ms") else ""))
        rows.append((k["t"], out))
    for ev in run_["events"]:
        if ev["event"] in ("no_candidate", "cgroup_chosen", "user_chosen", "group_kill_refused"):
            rows.append((ev["t"], [f"{ev['event']} " + ", ".join(f"{a}={b}" for a, b in ev.items()
                                                                 if a not in ("t", "event"))]))
    rows.sort(key=lambda r: r[0])
    lines = []
    for t, out in rows:
        lines.append(f"  {t:9.3f}s  {out[0]}")
        lines += [f"             {x}" for x in out[1:]]
    return lines or ["  nothing happened"]
