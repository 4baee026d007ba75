"""Issue 13 items 6 and 7 (config): hostile config and policy files.

A FIFO (or a symlink to a user-owned FIFO) in the policy directory: check,
rank and run --dry-run end promptly with an error naming it, never hang.
The config has the policy loader's limits: an alias bomb and a duplicate
key are config errors (exit 78) naming file:line.  The start-up compile
child has a time limit.

Each command runs in a child with a timeout: on a build that blocks in
open(2) on the FIFO, the test fails instead of hanging.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pyoomd.errors import EXIT_CONFIG, ConfigError
from pyoomd.policy.load import check_text, load_policies
from pyoomd.settings.load import settings_from_text

TIMEOUT_S = 20


def pyoomd(*argv: str) -> tuple[int, str, float]:
    t = time.monotonic()
    try:
        out = subprocess.run([sys.executable, "-m", "pyoomd", *argv], check=False, capture_output=True, text=True,
                             timeout=TIMEOUT_S, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        pytest.fail(f"pyoomd {' '.join(argv)} still running after {TIMEOUT_S} s (blocked?)")
    return out.returncode, out.stdout + out.stderr, time.monotonic() - t


def policy_dir(tmp_path: Path) -> Path:
    d = tmp_path / "policies.d"
    d.mkdir(mode=0o755)
    d.chmod(0o755)
    good = d / "10-good.yaml"
    good.write_text("version: 1\nrules:\n  - {name: a, match: {comm: x, user: 0}, adjust: 1}\n")
    good.chmod(0o644)
    return d


@pytest.fixture(params=["fifo", "symlink-to-user-fifo"])
def hostile_dir(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Path, Path]:
    tmp_path.chmod(0o755)
    d = policy_dir(tmp_path)
    if request.param == "fifo":
        bad = d / "50-fifo.yaml"
        os.mkfifo(bad, 0o644)
    else:
        elsewhere = tmp_path / "user"
        elsewhere.mkdir()
        fifo = elsewhere / "f"
        os.mkfifo(fifo, 0o666)
        if os.geteuid() == 0:
            os.chown(fifo, 1000, 1000)
            os.chown(elsewhere, 1000, 1000)
        bad = d / "50-link.yaml"
        bad.symlink_to(fifo)
    return d, bad


@pytest.mark.parametrize("cmd", [["check"], ["rank", "--policy"], ["run", "--dry-run", "--config", os.devnull,
                                                                    "--policy"]])
def test_a_fifo_in_the_policy_dir_is_refused_promptly(hostile_dir: tuple[Path, Path], cmd: list[str]) -> None:
    d, bad = hostile_dir
    code, out, took = pyoomd(*cmd, str(d))
    assert code == EXIT_CONFIG, out
    assert str(bad) in out and "FIFO" in out and "not a regular file" in out, out
    assert took < TIMEOUT_S


def test_a_device_is_refused_before_it_is_opened(tmp_path: Path) -> None:
    res = load_or_error([os.devnull.replace("null", "zero")])
    assert res is not None and "character device" in res.message


def load_or_error(paths: list[str]) -> ConfigError | None:
    try:
        load_policies(paths, hostname="h")
    except ConfigError as e:
        return e
    return None


def test_run_refuses_a_fifo_config(tmp_path: Path) -> None:
    tmp_path.chmod(0o755)
    fifo = tmp_path / "config.yaml"
    os.mkfifo(fifo, 0o644)
    code, out, _ = pyoomd("run", "--dry-run", "--config", str(fifo))
    assert code == EXIT_CONFIG and str(fifo) in out and "FIFO" in out, out


# -- the config has the policy loader's limits ------------------------------------------
def alias_bomb(key: str = "hooks:\n  pre_kill") -> str:
    lines = ['a: &a ["x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    for i, name in enumerate("bcdefghi"):
        prev = "abcdefghi"[i]
        lines.append(f"{name}: &{name} [" + ", ".join([f"*{prev}"] * 9) + "]")
    return "\n".join(lines) + f"\n{key}: *i\n"


def test_a_config_alias_bomb_is_a_config_error_at_once() -> None:
    text = alias_bomb()
    assert len(text) < 600
    t = time.monotonic()
    with pytest.raises(ConfigError) as e:
        settings_from_text("c.yaml", text)
    assert time.monotonic() - t < 2
    assert e.value.file == "c.yaml" and "too large" in e.value.message


def test_run_with_a_config_alias_bomb_exits_78(tmp_path: Path) -> None:
    tmp_path.chmod(0o755)
    cfg = tmp_path / "config.yaml"
    cfg.write_text(alias_bomb())
    cfg.chmod(0o644)
    code, out, took = pyoomd("run", "--dry-run", "--config", str(cfg))
    assert code == EXIT_CONFIG, out
    assert str(cfg) in out and "too large" in out and took < 10


@pytest.mark.parametrize("text, line", [
    ("kill: {grace: 1s}\nmemory: {term: 10%}\nkill: {grace: 9s}\n", 3),
    ("kill:\n  grace: 1s\n  grace: 2s\n", 3),
])
def test_a_duplicate_config_key_is_an_error_naming_its_line(text: str, line: int) -> None:
    with pytest.raises(ConfigError) as e:
        settings_from_text("c.yaml", text)
    assert e.value.line == line and "duplicate key" in e.value.message


def test_run_with_a_duplicate_config_key_exits_78(tmp_path: Path) -> None:
    tmp_path.chmod(0o755)
    cfg = tmp_path / "config.yaml"
    cfg.write_text("kill: {grace: 1s}\nkill: {grace: 9s}\n")
    cfg.chmod(0o644)
    code, out, _ = pyoomd("run", "--dry-run", "--config", str(cfg))
    assert code == EXIT_CONFIG and f"{cfg}:2:" in out and "duplicate key 'kill'" in out, out


def test_a_duplicate_key_in_a_policy_rule_names_its_line() -> None:
    res = check_text("p.yaml", "version: 1\nrules:\n  - name: a\n    match: {comm: x}\n    kill: group\n"
                               "    adjust: 5\n    kill: process\n")
    (e,) = res.errors
    assert (e.line, "duplicate key 'kill'" in e.message) == (7, True)


def test_deep_nesting_and_many_aliases_are_refused() -> None:
    with pytest.raises(ConfigError, match="nested"):
        settings_from_text("c.yaml", "a: " + "[" * 100 + "]" * 100 + "\n")
    many = "x: &x 1\nl: [" + ", ".join(["*x"] * 1001) + "]\n"
    with pytest.raises(ConfigError, match="more than 1000 aliases"):
        settings_from_text("c.yaml", many)


# -- the start-up compile child has a time limit -----------------------------------------
def test_startup_compile_has_a_time_limit(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                                          ) -> None:
    from pyoomd.daemon import launch as loop

    monkeypatch.setattr(loop, "_CHILD", "import time; time.sleep(30)")
    monkeypatch.setattr(loop, "STARTUP_TIMEOUT_S", 1.0)
    t = time.monotonic()
    code = loop.main(["run", "--dry-run"])
    assert time.monotonic() - t < 10
    assert code == 1
    assert "took over 1s and was killed" in capsys.readouterr().err


# -- fuzz: config alias bombs -----------------------------------------------------------
from fuzzing import fuzz
from hypothesis import given
from hypothesis import strategies as st

PLACES = ["hooks:\n  pre_kill", "hooks:\n  post_kill", "policy_dirs", "cgroups:\n  kill_whole", "memory",
          "notify", "bogus", "metrics:\n  listen"]


@st.composite
def bombs(draw: st.DrawFn) -> str:
    """Anchors each made of ``width`` uses of the previous, ``depth`` deep,
    used somewhere in a config (sequences or mappings)."""
    width, depth = draw(st.integers(1, 12)), draw(st.integers(1, 12))
    mapping = draw(st.booleans())
    leaf = draw(st.sampled_from(['"x"', "1", "[]", '["/bin/true"]', "{}", "10%"]))
    lines = [f"a0: &a0 {leaf}"]
    for i in range(1, depth + 1):
        uses = [f"*a{i - 1}"] * width
        body = ("{" + ", ".join(f"k{j}: {u}" for j, u in enumerate(uses)) + "}") if mapping else \
            ("[" + ", ".join(uses) + "]")
        lines.append(f"a{i}: &a{i} {body}")
    return "\n".join(lines) + f"\n{draw(st.sampled_from(PLACES))}: *a{depth}\n"


@fuzz(60, 300)
@given(bombs())
def test_config_alias_bombs_are_config_errors_in_bounded_time(text: str) -> None:
    t = time.monotonic()
    try:
        settings_from_text("bomb.yaml", text)
    except ConfigError as e:
        assert e.file == "bomb.yaml"
    assert time.monotonic() - t < 2.0
