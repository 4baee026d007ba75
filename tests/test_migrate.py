"""earlyoom's flags on `pyoomd run`, and `pyoomd migrate-earlyoom` against
the real /etc/default/earlyoom shipped by Debian's earlyoom package
(extracted from the .deb with dpkg-deb: nothing is installed or started)."""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from pyoomd.cli.arguments import build_parser
from pyoomd.cli.dispatch import main
from pyoomd.cli.earlyoom_flags import flag_rules
from pyoomd.cli.migrate import migrate, read_earlyoom_args
from pyoomd.cli.options import overrides_from
from pyoomd.errors import ConfigError
from pyoomd.model import ProcInfo
from pyoomd.policy.load import PolicySet, load_policies
from pyoomd.policy.rules import RssOrder
from pyoomd.settings.load import load_config, settings_from_dict


@pytest.fixture(scope="module")
def debian_default(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The file as Debian ships it: from the installed package if present,
    else from the downloaded .deb."""
    if os.path.exists("/var/lib/dpkg/info/earlyoom.list") and os.path.exists("/etc/default/earlyoom"):
        return Path("/etc/default/earlyoom")
    if not shutil.which("apt-get") or not shutil.which("dpkg-deb"):
        pytest.skip("needs Debian's apt-get and dpkg-deb")
    d = tmp_path_factory.mktemp("earlyoom-deb")
    r = subprocess.run(["apt-get", "download", "earlyoom"], cwd=d, capture_output=True, text=True, check=False)
    if r.returncode != 0:
        r = subprocess.run(["apt-get", "update", "-qq"], capture_output=True, text=True, check=False)
        r = subprocess.run(["apt-get", "download", "earlyoom"], cwd=d, capture_output=True, text=True, check=False)
    if r.returncode != 0:
        pytest.skip(f"cannot download Debian's earlyoom package: {r.stderr.strip()[-300:]}")
    (deb,) = glob.glob(str(d / "earlyoom_*.deb"))
    subprocess.run(["dpkg-deb", "-x", deb, str(d / "root")], check=True)
    return d / "root" / "etc" / "default" / "earlyoom"


def _examples(text: str) -> list[str]:
    """The file's commented-out EARLYOOM_ARGS examples, uncommented."""
    return [m.group(1) for m in re.finditer(r"^#\s*(EARLYOOM_ARGS=.*)$", text, re.MULTILINE)]


def test_the_shipped_file_migrates(debian_default: Path, tmp_path: Path) -> None:
    args = read_earlyoom_args(str(debian_default))
    assert args == ["-r", "3600"]  # Debian's default: an hourly memory report
    assert main(["migrate-earlyoom", str(debian_default), "--out-dir", str(tmp_path / "out")]) == 0
    settings = load_config(str(tmp_path / "out" / "config.yaml"))
    assert settings.report_interval == 3600.0
    assert settings.memory.term.pct == 10.0  # earlyoom's defaults are pyoomd's
    assert not (tmp_path / "out" / "policies.d").exists()


def test_every_example_in_the_shipped_file_migrates(debian_default: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    examples = _examples(debian_default.read_text())
    assert len(examples) >= 4, examples
    seen_avoid = False
    for i, line in enumerate(examples):
        f = tmp_path / f"default-{i}"
        f.write_text(debian_default.read_text() + "\n" + line + "\n")
        out = tmp_path / f"out-{i}"
        assert main(["migrate-earlyoom", str(f), "--out-dir", str(out)]) == 0, line
        settings = load_config(str(out / "config.yaml"))
        policy_dir = out / "policies.d"
        if "--avoid" in line:
            seen_avoid = True
            loaded = load_policies([str(policy_dir)], euid=os.geteuid())
            (rule,) = loaded.policy.rules
            assert rule.name == "earlyoom-avoid" and rule.adjust == -300
            fox = _proc(comm="firefox")
            assert loaded.policy.evaluate(fox).adjust == -300
            assert loaded.policy.evaluate(_proc(comm="firefox-bin")).adjust == 0  # anchored: $ in the regex
            assert "exe" in (policy_dir / "earlyoom.yaml").read_text()  # the warning, in the file too
            assert settings.policy_dirs == (str(policy_dir),)
        if "-m 15 -s 5" in line:
            assert settings.memory.term.pct == 15 and settings.memory.kill.pct == 7.5
            assert settings.swap.term.pct == 5
    assert seen_avoid


def test_avoid_warns_and_recommends_a_pin(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "earlyoom"
    f.write_text("EARLYOOM_ARGS=\"-m 5 --avoid '(^|/)(init|X|sshd|firefox)$' -n\"\n")
    assert main(["migrate-earlyoom", str(f)]) == 0
    out, err = capsys.readouterr()
    assert "process name only" in err and "exe: /usr/bin/PROGRAM" in err and "user: NAME" in err
    docs = out.split("# policies.d/earlyoom.yaml")
    assert yaml.safe_load(docs[0])["notify"] == {"enabled": True}
    rules = yaml.safe_load(docs[1])["rules"]
    assert rules == [{"name": "earlyoom-avoid", "match": {"comm": "(^|/)(init|X|sshd|firefox)$"},
                      "adjust": -300, "allow_name_only": True}]


def test_all_of_earlyooms_flags_on_run() -> None:
    argv = ["run", "-m", "20,18", "-s", "100", "-M", "1048576", "--prefer", "^chrome$", "--avoid", "^Xorg$",
            "--ignore", "^sshd$", "--ignore-root-user", "--sort-by-rss", "-g", "-n", "-N", "/usr/bin/logger",
            "-P", "/usr/local/bin/pre", "--dryrun", "-p", "-r", "60"]
    args = build_parser().parse_args(argv)
    s = settings_from_dict(overrides_from(args))
    assert s.memory.term.pct == 20 and s.memory.kill.pct == 18 and s.memory.term.kib == 1048576
    assert s.memory.kill.kib == 524288 and s.swap.term.pct == 100
    assert s.dry_run and s.notify.enabled and s.raise_priority and s.report_interval == 60
    assert s.hooks.post_kill == (("/usr/bin/logger",),) and s.hooks.pre_kill == (("/usr/local/bin/pre",),)
    rules = {r.name: r for r in flag_rules(args)}
    policy = PolicySet(tuple(rules.values()))
    assert policy.evaluate(_proc(comm="chrome")).adjust == 300
    assert policy.evaluate(_proc(comm="Xorg", uid=1000)).adjust == -300
    assert policy.evaluate(_proc(comm="sshd", uid=1000)).protect
    assert policy.evaluate(_proc(comm="anything", uid=0)).protect  # --ignore-root-user
    assert policy.evaluate(_proc(comm="bash", uid=1000)).kill_group  # -g


def test_sort_by_rss_ranks_by_rss_not_oom_score() -> None:
    rss = RssOrder(PolicySet(), mem_total_kib=1000 * 1024)
    big_low_score = _proc(comm="db", rss_kib=500 * 1024, oom_score=0)
    assert rss.evaluate(big_low_score).adjust == 500
    assert rss.max_bonus == 1000


def test_migration_of_both_percent_and_size_keeps_the_lower_wins_rule(tmp_path: Path) -> None:
    m = migrate(["-m", "10", "-M", "1048576"])
    assert m.config["memory"]["term"] == ["10%", "1048576K"]
    s = settings_from_dict(m.config)
    assert s.memory.term.resolve_kib(64 << 20) == 1048576 and s.memory.term.resolve_kib(4 << 20) == 419430


def test_unsupported_flags_are_noted_and_bad_ones_refused(tmp_path: Path) -> None:
    m = migrate(["-d", "-w", "20", "--syslog", "-m", "5"])
    assert m.args == ["-m", "5"] and len(m.warnings) == 3
    with pytest.raises(ConfigError):
        migrate(["--bogus"])
    f = tmp_path / "none"
    f.write_text("# nothing here\n")
    with pytest.raises(ConfigError, match="no EARLYOOM_ARGS"):
        read_earlyoom_args(str(f))


def test_existing_files_are_not_overwritten(tmp_path: Path) -> None:
    f = tmp_path / "earlyoom"
    f.write_text('EARLYOOM_ARGS="-r 60"\n')
    assert main(["migrate-earlyoom", str(f), "--out-dir", str(tmp_path)]) == 0
    assert main(["migrate-earlyoom", str(f), "--out-dir", str(tmp_path)]) == 78


def _proc(comm: str, uid: int = 1000, rss_kib: int = 1024, oom_score: int = 100) -> ProcInfo:
    return ProcInfo(pid=4242, start_time=1, comm=comm, ppid=1, state="S", uid=uid, rss_kib=rss_kib, swap_kib=0,
                    oom_score=oom_score, oom_score_adj=0, cmdline=comm, exe=f"/usr/bin/{comm}", cgroup="/")


def test_run_with_avoid_warns_at_startup_and_keeps_the_rule() -> None:
    from pyoomd.cli.earlyoom_flags import with_flag_rules
    from pyoomd.policy.load import Loaded

    args = build_parser().parse_args(["run", "--avoid", "^Xorg$", "--sort-by-rss"])
    loaded = with_flag_rules(Loaded(PolicySet()), args)
    assert loaded.loaded == ["<earlyoom flags>"]
    assert any("exe: /usr/bin/PROGRAM" in w.message for w in loaded.warnings)
    assert isinstance(loaded.policy, RssOrder) and [r.name for r in loaded.policy.rules] == ["earlyoom-avoid"]
