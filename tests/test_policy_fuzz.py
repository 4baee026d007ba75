"""Property: any YAML document either loads as a policy or raises the
project's ConfigError (with the file name), never anything else."""

from __future__ import annotations

import string
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pyoomd.errors import ConfigError
from pyoomd.judge.rank import score
from pyoomd.model import ProcInfo
from pyoomd.policy import PolicySet, check_text, load_policies

KEYS = ["version", "hosts", "rules", "name", "match", "adjust", "protect", "kill", "signal", "grace",
        "allow_name_only", "comm", "cmdline", "exe", "user", "cgroup", "parent", "bogus"]

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-2**70, max_value=2**70),
    st.floats(allow_nan=True), st.text(max_size=12),
    st.sampled_from(["group", "process", "SIGKILL", "SIGTERM", "5s", "250ms", "root", "/usr/sbin/sshd",
                     "(", "^a$", "[", "*", "build-*", "1", "+300", "\x00", "\ud800"[:0] + "\u2028"]),
)
keys = st.one_of(st.sampled_from(KEYS), st.text(max_size=6), st.integers(-3, 3))
documents = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4),
    st.dictionaries(keys, inner, max_size=5),
), max_leaves=30)

# Closer to real files: the right keys, random values.
match_specs = st.fixed_dictionaries({}, optional={k: documents for k in
                                                 ("comm", "cmdline", "exe", "user", "cgroup", "parent")})
rule_specs = st.fixed_dictionaries({"name": st.one_of(st.text(string.ascii_letters, min_size=1, max_size=8),
                                                      documents),
                                    "match": st.one_of(match_specs, documents)},
                                   optional={k: documents for k in ("adjust", "protect", "kill", "signal",
                                                                    "grace", "allow_name_only", "bogus")})
policy_docs = st.fixed_dictionaries({}, optional={"version": st.one_of(st.just(1), documents),
                                                  "hosts": documents,
                                                  "rules": st.one_of(st.lists(rule_specs, max_size=4), documents)})

PROCS = [
    ProcInfo(pid=10, start_time=1, comm="sshd", ppid=1, state="S", uid=0, rss_kib=1, swap_kib=0, oom_score=10,
             oom_score_adj=0, cmdline="sshd -D", exe="/usr/sbin/sshd", cgroup="/system.slice/ssh.service",
             parent_comm="systemd"),
    ProcInfo(pid=11, start_time=1, comm="a", ppid=10, state="S", uid=1000, rss_kib=1, swap_kib=0, oom_score=900,
             oom_score_adj=-999, cmdline=None, exe=None, cgroup=None, parent_comm=None),
]


def load_or_raise(text: str) -> PolicySet:
    res = check_text("fuzz.yaml", text, "host-1")
    if res.errors:
        raise res.errors[0]
    return PolicySet(res.rules)


def exercise(text: str) -> None:
    try:
        ps = load_or_raise(text)
    except ConfigError as e:
        assert e.file == "fuzz.yaml"
        assert str(e).startswith("fuzz.yaml")
        return
    assert 0 <= ps.max_bonus <= 2000
    for p in PROCS:
        out = score(p, ps)  # a loaded policy always evaluates
        badness = getattr(out, "badness", None)
        assert badness is None or 0 <= badness <= 2000


def dump(data: Any) -> str | None:
    try:
        return yaml.safe_dump(data, allow_unicode=True)
    except (yaml.YAMLError, ValueError, UnicodeEncodeError):
        return None


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(documents)
def test_random_documents_load_or_raise_config_error(data: Any) -> None:
    text = dump(data)
    if text is not None:
        exercise(text)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(policy_docs)
def test_policy_shaped_documents_load_or_raise_config_error(data: Any) -> None:
    text = dump(data)
    if text is not None:
        exercise(text)


@settings(max_examples=400, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("version: 1\nrules:- name{}[],&*!|>'\"#%@`\t ")), max_size=80))
def test_yaml_punctuation_soup_loads_or_raises_config_error(text: str) -> None:
    exercise(text)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_any_text_loads_or_raises_config_error(text: str) -> None:
    exercise(text)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=300))
def test_any_file_bytes_load_or_raise_config_error(tmp_path: Path, raw: bytes) -> None:
    f = tmp_path / "fuzz.yaml"
    f.write_bytes(raw)
    f.chmod(0o644)
    try:
        load_policies([str(f)], hostname="h", euid=1000)
    except ConfigError as e:
        assert e.file == str(f)
