"""Issue 13 item 1: policy regexes run in linear time (RE2), on bounded texts.

The catastrophic pattern is matched in a child process with a timeout: with
a backtracking engine the child would spin for minutes holding the GIL (no
thread or alarm could stop it), so only a separate process can fail the
test in bounded time.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

import pytest

from pyoomd.model import ProcInfo
from pyoomd.policy.load import check_text
from pyoomd.policy.rules import Loaded, PolicySet, loaded_from_plan, loaded_to_plan
from pyoomd.regex import MATCH_CMDLINE_MAX, RegexError, compile_policy_regex

EVIL = r"^(\w+\s?)*$"


def _proc(comm: str = "x", cmdline: str | None = None, parent: str | None = None) -> ProcInfo:
    return ProcInfo(pid=10, start_time=1, comm=comm, ppid=1, state="S", uid=1000, rss_kib=1, swap_kib=0,
                    oom_score=500, oom_score_adj=0, cmdline=cmdline, parent_comm=parent)


def test_catastrophic_pattern_matches_in_bounded_time_in_a_child() -> None:
    # 41+ characters that almost match: with Python's re this takes minutes
    # (x4 per 2 characters); RE2 answers in microseconds.
    doc = (f"version: 1\nrules:\n  - name: evil\n    match: {{cmdline: '{EVIL}', comm: '{EVIL}', "
           f"parent: '{EVIL}'}}\n    adjust: 100\n")
    code = textwrap.dedent("""
        import sys, time
        from pyoomd.policy.load import check_text
        from pyoomd.model import ProcInfo
        doc = sys.argv[1]
        res = check_text('evil.yaml', doc)
        assert not res.errors, res.errors
        rule = res.rules[0]
        hostile = 'a' * 45 + '!'
        for n in (41, 45, 64, 4096, 1 << 16):
            p = ProcInfo(pid=10, start_time=1, comm=hostile[:15], ppid=1, state='S', uid=1, rss_kib=1,
                         swap_kib=0, oom_score=1, oom_score_adj=0, cmdline='a' * (n - 1) + '!', parent_comm=hostile)
            t = time.process_time()  # CPU time: a busy machine's scheduling does not count
            rule.matches(p)
            assert time.process_time() - t < 0.5, n
        print('ok')
    """)
    t0 = time.monotonic()
    try:
        out = subprocess.run([sys.executable, "-c", code, doc], check=False, capture_output=True, text=True, timeout=20)
    except subprocess.TimeoutExpired:
        pytest.fail("matching the catastrophic pattern did not finish in 20 s (backtracking engine)")
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
    assert time.monotonic() - t0 < 20


def test_matching_stays_linear_and_correct() -> None:
    rx = compile_policy_regex(EVIL)
    t = time.monotonic()
    assert rx.search("a" * 40 + "!") is None
    assert rx.search("ab cd ef") is not None
    assert time.monotonic() - t < 0.1


@pytest.mark.parametrize(("pattern", "construct"), [
    (r"(a)\1", r"\1"), (r"^(?!chrome$)", "(?!"), (r"(?<=x)y", "(?<="), (r"a{1001}", "{1001}"),
    (r"a++", "++"), (r"x\Z", r"\Z"),
])
def test_a_pattern_re2_cannot_compile_is_an_error_naming_file_line_and_construct(pattern: str,
                                                                                  construct: str) -> None:
    doc = f"version: 1\nrules:\n  - name: ok\n    match: {{comm: '^x$'}}\n    adjust: 1\n" \
          f"  - name: bad\n    match:\n      comm: '{pattern}'\n    adjust: 1\n"
    res = check_text("p.yaml", doc)
    assert len(res.errors) == 1, res.errors
    e = res.errors[0]
    assert (e.file, e.line) == ("p.yaml", 8)
    assert "rule 'bad'" in e.message and construct in e.message and "RE2" in e.message
    with pytest.raises(RegexError):
        compile_policy_regex(pattern)


def test_cli_check_reports_it_with_exit_78(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    from pyoomd.cli.dispatch import main

    f = tmp_path / "p.yaml"
    f.write_text("version: 1\nrules:\n  - name: bad\n    match: {cmdline: '(?=x)'}\n    adjust: 1\n")
    f.chmod(0o644)
    assert main(["check", str(f)]) == 78
    out = capsys.readouterr()
    assert f"{f}:4:" in out.out + out.err and "(?=" in out.out + out.err


def test_cmdline_seen_by_the_matcher_is_bounded() -> None:
    res = check_text("p.yaml", "version: 1\nrules:\n  - name: tail\n    match: {cmdline: 'NEEDLE'}\n    adjust: 1\n")
    rule = res.rules[0]
    assert rule.matches(_proc(cmdline="x" * (MATCH_CMDLINE_MAX - 6) + "NEEDLE"))
    assert not rule.matches(_proc(cmdline="x" * MATCH_CMDLINE_MAX + "NEEDLE"))


def test_plan_round_trip_keeps_re2_rules() -> None:
    res = check_text("p.yaml", "version: 1\nrules:\n  - name: r\n    match: {comm: '^(Web Content|x)$'}\n"
                               "    adjust: 5\n")
    back = loaded_from_plan(loaded_to_plan(Loaded(PolicySet(res.rules, ("p.yaml",)))))
    assert back.policy.rules[0].matches(_proc(comm="Web Content"))
    assert not back.policy.rules[0].matches(_proc(comm="Web Contents"))


def test_a_lone_surrogate_never_raises() -> None:
    res = check_text("p.yaml", "version: 1\nrules:\n  - name: r\n    match: {comm: 'a'}\n    adjust: 5\n")
    assert res.rules[0].matches(_proc(comm="\udcffa"))
