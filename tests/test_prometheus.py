"""packaging/prometheus/: the alert rules pass `promtool check rules` and
their unit tests (`promtool test rules`), the Grafana dashboard's queries
parse, and every metric name the rules and the dashboard use is one pyoomd
exports (read from a real registry after a kill) or Prometheus's own
``up``."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from pyoomd.model import Decision, Level, MemSample, Pressure, PsiLine
from pyoomd.report.metrics import Metrics
from pyoomd.settings.amounts import Thresholds
from pyoomd.settings.schema import MetricsConfig

ROOT = Path(__file__).resolve().parent.parent
PROM = ROOT / "packaging" / "prometheus"
RULES = PROM / "alerts.yaml"
DASHBOARD = PROM / "grafana-dashboard.json"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool not installed (Debian: the prometheus "
                                    "package; .ci/run installs it without starting its service)")
# Prometheus's own, per target.
ALSO_ALLOWED = {"up"}
PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "offset", "bool", "and", "or",
                "unless", "inf", "nan"}


def exported_names() -> set[str]:
    """Sample names of a real registry after a tick, a kill, an escalation
    and the end of an episode (every family has samples then)."""
    th = Thresholds(mem_warn_kib=4 << 20, mem_term_kib=2 << 20, mem_kill_kib=1 << 20,
                    swap_term_kib=1 << 20, swap_kill_kib=1 << 19)
    ticks = iter([0.00002])
    m = Metrics(MetricsConfig(), th, lambda *a, **k: None, last_tick_s=lambda: next(ticks, None))
    m.on_tick(MemSample(16 << 20, 3 << 20, 8 << 20, 5 << 20,
                        Pressure(PsiLine(12.5, 3.0, 1.0, 100), PsiLine(4.25, 1.0, 0.5, 50))),
              Decision(Level.TERM, "", 0.01))
    kill = {"pid": 42, "comm": "hog", "uid": 0, "signal": "SIGTERM", "dry_run": False, "oom_level": "TERM",
            "reason": "MemAvailable low", "episode_kills": 1}
    m.on_event("kill", kill)
    m.on_event("kill", {**kill, "dry_run": True})
    m.on_event("escalate", {"pid": 42})
    m.on_event("victim_stuck", {"pid": 42})
    m.on_event("memory_recovered", {"kills": 1})
    text = generate_latest(m.registry).decode()
    return {s.name for fam in text_string_to_metric_families(text) for s in fam.samples}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects: identifiers that are not
    functions, keywords, label names (in braces or in by/on/... lists) or
    inside strings, ranges and durations."""
    e = re.sub(r'"(?:\\.|[^"\\])*"', '""', expr)  # strings (label values, printf)
    e = re.sub(r"\{[^}]*\}", "", e)  # label matchers
    e = re.sub(r"\[[^\]]*\]", "", e)  # ranges, subqueries
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", e)
    e = re.sub(r"\boffset\s+\S+", " ", e)
    names = set()
    for m in re.finditer(r"(?<![\w.$])([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?", e):
        word, call = m.group(1), m.group(2)
        if call or word.lower() in PROMQL_WORDS:
            continue
        names.add(word)
    return names


def rule_exprs() -> list[tuple[str, str]]:
    doc = yaml.safe_load(RULES.read_text())
    return [(r.get("alert") or r["record"], r["expr"]) for g in doc["groups"] for r in g["rules"]]


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())  # type: ignore[no-any-return]


def dashboard_exprs() -> list[tuple[str, str]]:
    out = []
    for p in dashboard()["panels"]:
        for t in p.get("targets", []):
            out.append((p["title"], t["expr"]))
    for v in dashboard()["templating"]["list"]:
        if v["type"] == "query":
            q = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
            m = re.fullmatch(r"label_values\((\w+),\s*\w+\)", q)
            assert m, f"variable {v['name']}: {q}"
            out.append((f"${v['name']}", m.group(1)))
    return out


def test_metric_name_extraction() -> None:
    assert metric_names('sum by (node) (increase(pyoomd_kills_total{node=~"$node"}[$__rate_interval])) > 0') \
        == {"pyoomd_kills_total"}
    assert metric_names("a unless b offset 10m or up{job=\"x\"} == 0") == {"a", "b", "up"}
    assert metric_names('100 * x / on(node) group_left(comm) y') == {"x", "y"}


def test_every_metric_used_is_one_pyoomd_exports() -> None:
    allowed = exported_names() | ALSO_ALLOWED
    assert {"pyoomd_kills_total", "pyoomd_mem_available_bytes", "pyoomd_psi_some_avg10",
            "pyoomd_last_victim_info", "pyoomd_kernel_oom_kills_total"} <= allowed
    used = {}
    for where, expr in [*rule_exprs(), *dashboard_exprs()]:
        names = metric_names(expr)
        assert names, f"{where}: no metric in {expr!r}"
        for n in names:
            used[n] = where
    unknown = {n: w for n, w in used.items() if n not in allowed}
    assert not unknown, f"not exported by pyoomd: {unknown}"


def test_dashboard_shows_what_a_fleet_needs() -> None:
    d = dashboard()
    by_title = {p["title"]: " ".join(t["expr"] for t in p["targets"]) for p in d["panels"]}
    assert "pyoomd_kills_total" in by_title["Kills per node"] and "by (node)" in by_title["Kills per node"]
    assert "pyoomd_mem_available_bytes" in by_title["MemAvailable per node"]
    assert any("pyoomd_psi_some_avg10" in e for e in by_title.values())
    assert any("pyoomd_psi_full_avg10" in e for e in by_title.values())
    assert "by (comm)" in by_title["Top victims by comm"]
    assert len({p["id"] for p in d["panels"]}) == len(d["panels"])
    # every panel's queries are per node and follow the $node variable
    for p in d["panels"]:
        for t in p["targets"]:
            assert 'node=~"$node"' in t["expr"], p["title"]


def test_rules_name_node_the_scrape_job_labels() -> None:
    scrape = yaml.safe_load((PROM / "scrape.yaml").read_text())
    (job,) = scrape["scrape_configs"]
    assert job["job_name"] == "pyoomd"
    targets = {r.get("target_label") for r in job["relabel_configs"]}
    assert "node" in targets
    # the port the job keeps is the DaemonSet's metrics port
    keep_port = next(r["regex"] for r in job["relabel_configs"]
                     if r.get("source_labels") == ["__meta_kubernetes_pod_container_port_name"])
    ds = next(d for d in yaml.safe_load_all((ROOT / "packaging" / "kubernetes" / "daemonset.yaml").read_text())
              if d and d["kind"] == "DaemonSet")
    assert keep_port in {p["name"] for p in ds["spec"]["template"]["spec"]["containers"][0]["ports"]}
    for name, expr in rule_exprs():
        # an aggregation keeps the node; a plain selector keeps every target label
        if "sum" in expr:
            assert all(by.startswith("node") for by in re.findall(r"sum by \(([^)]*)\)", expr)), name
        for job_name in re.findall(r'job="([^"]*)"', expr):
            assert job_name == job["job_name"], name


def promtool(*args: str, cwd: Path = PROM) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL
    return subprocess.run([PROMTOOL, *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False)


@needs_promtool
def test_promtool_check_rules() -> None:
    r = promtool("check", "rules", RULES.name)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"SUCCESS: {len(rule_exprs())} rules found" in r.stdout


@needs_promtool
def test_promtool_test_rules() -> None:
    r = promtool("test", "rules", "alerts.test.yaml")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS" in r.stdout


@needs_promtool
def test_dashboard_queries_parse(tmp_path: Path) -> None:
    """Each query, with Grafana's variables filled in, as a recording rule:
    promtool parses it."""
    rules = []
    for i, (title, expr) in enumerate(dashboard_exprs()):
        e = expr.replace("$__rate_interval", "1m").replace("$__range", "1h").replace("$node", ".*")
        rules.append({"record": f"dashboard:q{i}", "expr": e, "labels": {"panel": title}})
    (tmp_path / "dash.yaml").write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    r = promtool("check", "rules", "dash.yaml", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
