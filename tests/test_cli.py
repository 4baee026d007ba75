"""Command line: exit codes and flag -> settings mapping.  No root, fixture /proc only."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import FIXTURE_PROC, run_main

from pyoomd.cli import options
from pyoomd.cli.arguments import build_parser
from pyoomd.cli.options import overrides_from
from pyoomd.errors import EXIT_CONFIG, EXIT_OK, EXIT_OSFILE, EXIT_USAGE
from pyoomd.settings.amounts import Amount
from pyoomd.settings.load import load_config
from pyoomd.settings.schema import Settings

GIB_KIB = 1024 * 1024


pytestmark = pytest.mark.usefixtures("no_daemon_loop")  # conftest.py: no test reaches the loop


def settings_of(*argv: str) -> Settings:
    return load_config(None, overrides_from(build_parser().parse_args(["run", *argv])))


# -- usage errors: 2 -----------------------------------------------------------------
@pytest.mark.parametrize(
    "argv",
    [
        ["--no-such-flag"],
        [],  # a sub-command is required
        ["frobnicate"],
        ["run", "--bogus"],
        ["run", "-m", "200"],
        ["run", "-m", "-5"],
        ["run", "-m", "abc"],
        ["run", "-m", "10,5,1"],
        ["run", "-m", "10,"],
        ["run", "-M", "2X"],
        ["run", "-s", "101"],
        ["run", "--grace", "soon"],
        ["sample", "--reader", "rust"],
        ["rank", "--top", "many"],
    ],
)
def test_bad_flags_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert run_main(argv) == EXIT_USAGE
    assert "pyoomd: error:" in capsys.readouterr().err


def test_pct_out_of_range_names_value(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_main(["run", "-m", "200"]) == EXIT_USAGE
    assert "200" in capsys.readouterr().err


# -- config errors: 78 -----------------------------------------------------------------
def test_unknown_config_key_exit_78(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "config.yaml"
    cfg.write_text("memory:\n  term: 10%\n  trem: 5%\n")
    assert run_main(["--procfs", FIXTURE_PROC, "rank", "--config", str(cfg)]) == EXIT_CONFIG
    err = capsys.readouterr().err
    assert f"{cfg}:3:" in err
    assert "memory.trem" in err


def test_unknown_config_key_run_exit_78(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "config.yaml"
    cfg.write_text("dry_run: true\nverbose: 1\n")
    assert run_main(["--procfs", FIXTURE_PROC, "run", "--config", str(cfg)]) == EXIT_CONFIG
    assert f"{cfg}:2:" in capsys.readouterr().err


def test_bad_yaml_exit_78(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "config.yaml"
    cfg.write_text("memory: {term: 10%\n")
    assert run_main(["--procfs", FIXTURE_PROC, "rank", "--config", str(cfg)]) == EXIT_CONFIG
    assert str(cfg) in capsys.readouterr().err


def test_missing_config_file_exit_78(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "absent.yaml"
    assert run_main(["--procfs", FIXTURE_PROC, "rank", "--config", str(cfg)]) == EXIT_CONFIG
    assert str(cfg) in capsys.readouterr().err


def test_kill_above_term_exit_78(capsys: pytest.CaptureFixture[str]) -> None:
    # parses fine; the levels are resolved against MemTotal at startup
    argv = ["--procfs", FIXTURE_PROC, "run", "--dry-run", "--log-format", "json", "-m", "10,20"]
    assert run_main(argv) == EXIT_CONFIG
    assert "memory.kill" in capsys.readouterr().err


# -- sample -------------------------------------------------------------------------------
def test_sample_json_fixture(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_main(["--procfs", FIXTURE_PROC, "sample", "--json"]) == EXIT_OK
    data = json.loads(capsys.readouterr().out)
    assert data["backend"] in ("cffi", "python")
    assert data["mem_total_kib"] == 16318708
    assert data["mem_available_kib"] == 6822140
    assert data["swap_total_kib"] == 8388604
    assert data["available_estimated"] is False
    assert data["psi"]["some"]["avg10"] == pytest.approx(41.27)


def test_sample_json_python_backend(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_main(["--procfs", FIXTURE_PROC, "sample", "--json", "--reader", "python"]) == EXIT_OK
    assert json.loads(capsys.readouterr().out)["backend"] == "python"


def test_sample_text(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_main(["--procfs", FIXTURE_PROC, "sample"]) == EXIT_OK
    assert "16318708" in capsys.readouterr().out


def test_sample_missing_procfs_exit_72(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_main(["--procfs", "/nonexistent", "sample"]) == EXIT_OSFILE
    assert "/nonexistent/meminfo" in capsys.readouterr().err


@pytest.mark.parametrize("reader", ["python", "auto"])
def test_sample_missing_procfs_exit_72_each_backend(reader: str) -> None:
    assert run_main(["--procfs", "/nonexistent", "sample", "--reader", reader]) == EXIT_OSFILE


def test_run_missing_procfs_exit_72() -> None:
    assert run_main(["--procfs", "/nonexistent", "run", "--dry-run", "--log-format", "json"]) == EXIT_OSFILE


# -- rank -----------------------------------------------------------------------------------
def test_rank_json_fixture(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_main(["--procfs", FIXTURE_PROC, "rank", "--json", "--top", "3"]) == EXIT_OK
    data = json.loads(capsys.readouterr().out)
    pids = [c["pid"] for c in data["candidates"]]
    assert pids[0] == 201  # oom_score 870
    assert not set(pids) & {1, 2, 205, 206}
    assert [c["rank"] for c in data["candidates"]] == list(range(1, len(pids) + 1))


# -- flags -> settings ---------------------------------------------------------------------
def test_no_flags_no_overrides() -> None:
    assert overrides_from(build_parser().parse_args(["run"])) == {}


def test_m_kill_defaults_to_half() -> None:
    o = overrides_from(build_parser().parse_args(["run", "-m", "10"]))
    assert o["memory"] == {"term": Amount(pct=10.0), "kill": Amount(pct=5.0)}
    s = settings_of("-m", "10")
    assert s.memory.term == Amount(pct=10.0)
    assert s.memory.kill == Amount(pct=5.0)


def test_m_explicit_kill() -> None:
    s = settings_of("-m", "15,3")
    assert (s.memory.term, s.memory.kill) == (Amount(pct=15.0), Amount(pct=3.0))


def test_s_sets_swap() -> None:
    s = settings_of("-s", "40")
    assert (s.swap.term, s.swap.kill) == (Amount(pct=40.0), Amount(pct=20.0))
    assert s.memory.term == Amount(pct=10.0)  # untouched


def test_M_bare_number_is_kib_and_kill_half() -> None:
    s = settings_of("-M", "1048576")
    assert (s.memory.term, s.memory.kill) == (Amount(kib=1048576), Amount(kib=524288))


def test_m_and_M_keep_both_and_lower_wins() -> None:
    s = settings_of("-m", "10", "-M", "1G")
    assert s.memory.term == Amount(pct=10.0, kib=GIB_KIB)
    assert s.memory.kill == Amount(pct=5.0, kib=GIB_KIB // 2)
    big = s.compile(16 * GIB_KIB, 0)
    assert (big.mem_term_kib, big.mem_kill_kib) == (GIB_KIB, GIB_KIB // 2)  # 1.6 GiB > 1 GiB
    small = s.compile(4 * GIB_KIB, 0)
    assert (small.mem_term_kib, small.mem_kill_kib) == (int(4 * GIB_KIB * 0.1), int(4 * GIB_KIB * 0.05))


def test_other_flags_map() -> None:
    args = build_parser().parse_args(["run", "--dry-run", "--log-format", "json", "--reader", "python",
                                      "--grace", "2.5"])
    o = overrides_from(args)
    assert o == {"dry_run": True, "log_format": "json", "reader": "python", "kill": {"grace": 2.5}}


def test_flags_override_config_file(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("memory:\n  term: 20%\n  kill: 10%\n  warn: 40%\nkill:\n  grace: 9s\n")
    args = build_parser().parse_args(["run", "--config", str(cfg), "-m", "8", "--grace", "1"])
    s = options.settings_for(args)
    assert (s.memory.term, s.memory.kill, s.memory.warn) == (Amount(pct=8.0), Amount(pct=4.0), Amount(pct=40.0))
    assert s.kill.grace == pytest.approx(1.0)
