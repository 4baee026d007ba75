"""The one settings schema (pyoomd/settings): the plan's codec gives back
what it was given, amounts stay Amounts wherever they are, a plan's unknown
fields are ignored, and the loop's modules import no pydantic."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import typing
from pathlib import Path
from typing import Any

import pytest

from pyoomd.settings.amounts import Amount
from pyoomd.settings.load import settings_from_dict, validate
from pyoomd.settings.plan import from_plan, settings_from_plan, settings_to_plan, to_plan
from pyoomd.settings.schema import PsiWakeupConfig, SamplingConfig, Settings

REPO = Path(__file__).resolve().parent.parent

# Every field of every section away from its default (checked below, so a
# new field must be given a value here).
EVERY_SECTION: dict[str, Any] = {
    "memory": {"term": "2G", "kill": ["3%", "1G"], "warn": "30%"},
    "swap": {"term": "20%", "kill": "512M"},
    "sampling": {"max_interval": "500ms", "min_interval": "5ms", "min_rate_mib_s": 5000,
                 "max_rate_mib_s": 60000, "swap_min_rate_mib_s": 700},
    "kill": {"grace": "2s", "kill_timeout": "3s", "settle": "100ms", "release_timeout": "2s"},
    "dry_run": True, "log_format": "json", "reader": "python", "policy_dirs": ["/a", "/b"],
    "growth": {"enabled": False, "weight": 5, "window": "30s", "interval": "2s", "follow_top": 8},
    "report_top": 2,
    "psi": {"enabled": False, "line": "some", "avg": "avg60", "term": "30%", "kill": "60%", "duration": "5s",
            "post_action_delay": "20s",
            "wakeup": {"enabled": False, "kind": "full", "stall": "100ms", "window": "2s"}},
    "swap_relief": {"enabled": False, "window": "2s", "horizon": "3s", "stall": "25%"},
    "thrash": {"enabled": False, "stall": "40%", "window": "2s", "duration": "2s", "min_swapin_mib_s": 2,
               "min_refault_mib_s": 8, "post_action_delay": "5s"},
    "kernel_log": {"enabled": False, "path": "/tmp/kmsg"},
    "cgroups": {"oom_group": False, "kill_whole": ["/system.slice/build.service/"], "preferences": False},
    "cgroup_choice": {"enabled": True, "root": "/system.slice", "by": "memory"},
    "choice": {"by_user": True},
    "hooks": {"pre_kill": "/bin/true", "post_kill": [["/usr/bin/logger", "-t", "pyoomd"]], "pre_kill_wait": "1s",
              "timeout": "5s", "user": "daemon"},
    "notify": {"enabled": True, "min_interval": "1m", "warn_low_memory": True, "run_user_dir": "/run/u",
               "sessions": "all", "system_bus": "unix:path=/tmp/bus"},
    "soft_actions": {"system_bus": "unix:path=/tmp/bus2", "timeout": "3s"},
    "low_memory_monitor": {"enabled": False, "system_bus": "unix:path=/tmp/bus3", "min_interval": "30s"},
    "metrics": {"listen": "127.0.0.1:9101", "textfile": "/tmp/p.prom", "textfile_interval": 30},
    "status": {"socket": None},
    "recorder": {"enabled": False, "dir": "/tmp/traces", "seconds": "60s", "memory_mib": 4, "max_files": 3,
                 "max_mib": 10},
    "report_interval": 60, "raise_priority": True,
}


def _round_trip(s: Settings) -> Settings:
    return settings_from_plan(json.loads(json.dumps(settings_to_plan(s))))


def _leaves(obj: Any, path: str = "") -> dict[str, Any]:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, Amount):
        out: dict[str, Any] = {}
        for f in dataclasses.fields(obj):
            out |= _leaves(getattr(obj, f.name), f"{path}.{f.name}".lstrip("."))
        return out
    return {path: obj}


def test_the_default_settings_round_trip() -> None:
    assert _round_trip(Settings()) == Settings()


def test_settings_with_every_section_changed_round_trip() -> None:
    s = settings_from_dict(EVERY_SECTION)
    ours, defaults = _leaves(s), _leaves(Settings())
    assert ours.keys() == defaults.keys()
    assert [k for k in ours if ours[k] == defaults[k]] == []  # every field away from its default
    back = _round_trip(s)
    assert back == s
    assert _leaves(back) == ours
    assert {k: type(v) for k, v in _leaves(back).items()} == {k: type(v) for k, v in ours.items()}


def _with_an_amount(cls: type) -> type:
    """``cls`` (a dataclass) with one more field, an Amount; its dataclass
    fields get the same treatment, down to the leaves."""
    hints = typing.get_type_hints(cls)  # the plain types, as the codec reads them
    fields: list[Any] = []
    for f in dataclasses.fields(cls):
        default = getattr(cls(), f.name)
        if dataclasses.is_dataclass(default) and not isinstance(default, Amount):
            sub = _with_an_amount(type(default))
            fields.append((f.name, sub, dataclasses.field(default_factory=sub)))
        else:
            fields.append((f.name, hints[f.name], dataclasses.field(default=default)))
    fields.append(("an_amount", Amount, dataclasses.field(default=Amount(pct=1.5, kib=7))))
    return dataclasses.make_dataclass(f"{cls.__name__}WithAmount", fields, frozen=True)


def test_an_amount_in_any_section_comes_back_an_amount() -> None:
    """The codec follows the type hints: an Amount field in any section, at
    any depth, comes back an Amount (not a mapping), and so do the real ones."""
    probe_cls = _with_an_amount(Settings)
    probe = probe_cls()
    back = from_plan(probe_cls, json.loads(json.dumps(to_plan(probe))))
    assert back == probe
    amounts = {k: v for k, v in _leaves(back).items() if k.endswith("an_amount")}
    sections = [f.name for f in dataclasses.fields(Settings) if dataclasses.is_dataclass(getattr(Settings(), f.name))]
    assert {k.rsplit(".", 1)[0] for k in amounts if "." in k} >= set(sections) | {"psi.wakeup"}
    assert all(type(v) is Amount and v == Amount(pct=1.5, kib=7) for v in amounts.values())
    real = _round_trip(settings_from_dict(EVERY_SECTION))
    assert real.memory.kill == Amount(pct=3.0, kib=1 << 20) and type(real.swap.kill) is Amount


def test_a_plan_field_this_version_does_not_know_is_ignored() -> None:
    plan = json.loads(json.dumps(settings_to_plan(settings_from_dict(EVERY_SECTION))))
    plan["from_the_future"] = {"knob": 1}
    plan["kill"]["future_knob"] = "5s"
    plan["psi"]["wakeup"]["future"] = [1, 2]
    plan["memory"]["term"]["future_unit"] = "pages"
    assert settings_from_plan(plan) == settings_from_dict(EVERY_SECTION)


def test_a_field_the_plan_lacks_takes_its_default() -> None:
    plan = settings_to_plan(settings_from_dict(EVERY_SECTION))
    del plan["recorder"], plan["kill"]["grace"]
    s = settings_from_plan(plan)
    assert s.recorder == Settings().recorder and s.kill.grace == Settings().kill.grace
    assert s.kill.settle == pytest.approx(0.1)


def test_cross_field_checks_hold_for_settings_built_in_code() -> None:
    with pytest.raises(ValueError, match="min_interval"):
        SamplingConfig(min_interval=2.0, max_interval=1.0)
    with pytest.raises(ValueError, match="stall <= window"):
        PsiWakeupConfig(stall=2.0)


def _sections(cls: type) -> list[type]:
    out = [cls]
    for f in dataclasses.fields(cls):
        default = getattr(cls(), f.name)
        if dataclasses.is_dataclass(default) and not isinstance(default, Amount):
            out += _sections(type(default))
    return out


@pytest.mark.parametrize("cls", _sections(Settings), ids=lambda c: c.__name__)
def test_every_section_refuses_an_unknown_key_and_validates_to_its_defaults(cls: type) -> None:
    assert validate(cls, {}) == cls()
    with pytest.raises(ValueError, match="Unexpected keyword argument"):
        validate(cls, {"no_such_key": 1})


def test_the_loops_modules_do_not_import_pydantic() -> None:
    code = """
import json, sys
from pyoomd import daemon
from pyoomd.daemon import launch
from pyoomd.settings import amounts, plan, schema, trust
s = plan.settings_from_plan(plan.settings_to_plan(schema.Settings()))
s.compile(16 << 20, 8 << 20)
print(json.dumps(sorted(sys.modules)))
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False,
                       cwd=REPO, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert r.returncode == 0, r.stderr
    modules = set(json.loads(r.stdout.splitlines()[-1]))
    assert "pyoomd.settings.schema" in modules and "pyoomd.daemon.launch" in modules
    assert {"pydantic", "pydantic_core", "yaml", "pyoomd.settings.load"} & modules == set()
