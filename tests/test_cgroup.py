"""Cgroup reading over fixture trees (v2 and v1), preferences (xattrs on a
copy), the cgroup-aware choice, and real cgroup v2 PSI files where present."""

from __future__ import annotations

import os
import shutil

import pytest

from pyoomd.act.cgroup_kill import GroupKiller
from pyoomd.errors import ParseError
from pyoomd.judge.cgroupchoice import choose_leaf
from pyoomd.model import Level, Pressure, PsiLine
from pyoomd.sense import parse
from pyoomd.sense.cgroup import (
    XATTR_AVOID,
    XATTR_OMIT,
    CgroupRef,
    Cgroups,
    LeafStat,
    parse_flag,
    parse_procs,
)
from pyoomd.sense.procfs import Procfs

FIX = os.path.join(os.path.dirname(__file__), "fixtures", "cgroup")
APP = "/user.slice/user-1000.slice/user@1000.service/app.slice"
REAL_UNIFIED = "/sys/fs/cgroup/unified"


def v2(root: str = os.path.join(FIX, "v2")) -> Cgroups:
    return Cgroups(Procfs("/nonexistent-proc", cgroup_root=root))


def v1() -> Cgroups:
    return Cgroups(Procfs("/nonexistent-proc", cgroup_root=os.path.join(FIX, "v1")))


# -- pure parsers ----------------------------------------------------------------
def test_parse_procs_and_flag() -> None:
    assert parse_procs(b"12\n345\n\n") == [12, 345]
    assert parse_procs(b"") == []
    with pytest.raises(ParseError):
        parse_procs(b"12\nx\n")
    assert parse_flag(b"1\n", "f", "memory.oom.group") is True
    assert parse_flag(b"0", "f", "memory.oom.group") is False
    with pytest.raises(ParseError):
        parse_flag(b"2\n", "f", "memory.oom.group")


# -- v2 fixture tree ---------------------------------------------------------------
def test_v2_members_memory_pressure_oom_group() -> None:
    cg = v2()
    build = CgroupRef(f"{APP}/build.service", True)
    assert cg.members(build) == [201, 202, 203]
    assert cg.oom_group(build) is True
    assert cg.oom_group(CgroupRef(f"{APP}/firefox.scope", True)) is False
    assert cg.memory_bytes(build) == 1 << 30
    psi = cg.pressure(build)
    assert psi is not None and psi.some.avg10 == 60.0 and psi.full is not None and psi.full.avg10 == 30.0
    assert cg.kill_file(build) is not None and cg.kill_file(build).endswith(f"{APP}/build.service/cgroup.kill")


def test_v2_vanished_cgroup_is_empty_not_an_error() -> None:
    cg = v2()
    gone = CgroupRef(f"{APP}/gone.scope", True)
    assert cg.members(gone) == []
    assert cg.oom_group(gone) is False
    assert cg.memory_bytes(gone) is None
    assert cg.pressure(gone) is None
    assert cg.kill_file(gone) is None


def test_v2_leaves_below_a_root() -> None:
    leaves = [c.path for c in v2().leaves("/user.slice")]
    assert leaves == ["/user.slice/user-1000.slice/session-1.scope",
                      f"{APP}/build.service", f"{APP}/empty.scope", f"{APP}/firefox.scope"]
    assert [c.path for c in v2().leaves(f"{APP}/firefox.scope")] == [f"{APP}/firefox.scope"]
    assert v2().leaves("/no.slice") == []


def test_ref_prefers_the_v2_tree_when_it_has_the_directory() -> None:
    assert v2().ref(f"{APP}/build.service") == CgroupRef(f"{APP}/build.service", True)
    assert v1().ref("/build") == CgroupRef("/build", False)
    assert v2().ref(None) is None


# -- v1 fixture tree -----------------------------------------------------------------
def test_v1_memory_controller() -> None:
    cg = v1()
    build = CgroupRef("/build", False)
    assert cg.members(build) == [201, 202]  # cgroup.procs (processes), not tasks (threads)
    assert cg.memory_bytes(build) == 1 << 30  # memory.usage_in_bytes
    assert cg.pressure(build) is None  # no PSI in v1
    assert cg.oom_group(build) is False  # v2 only
    assert cg.kill_file(build) is None  # v2 only


def test_v1_malformed_files_give_nothing() -> None:
    bad = CgroupRef("/bad", False)
    assert v1().members(bad) == []
    assert v1().memory_bytes(bad) is None


def test_proc_cgroup_lines_v2_and_v1() -> None:
    data = b"12:memory:/build\n4:cpu,cpuacct:/\n0::/user.slice/x.scope\n"
    assert parse.parse_cgroup(data) == ("/user.slice/x.scope", "/build")


# -- preferences: systemd's user.oomd_avoid / user.oomd_omit ------------------------------
@pytest.fixture()
def tree(tmp_path: os.PathLike[str]) -> str:
    root = os.path.join(tmp_path, "v2")
    shutil.copytree(os.path.join(FIX, "v2"), root)
    try:
        os.setxattr(root, "user.probe", b"1")
    except OSError as e:
        pytest.skip(f"no user xattrs on {tmp_path}: {e}")
    return root


def _dir(root: str, path: str) -> str:
    return os.path.join(root, path.lstrip("/"))


@pytest.mark.skipif(os.geteuid() != 0, reason="fixture dirs must be root-owned for xattrs to count")
def test_preferences_from_the_cgroup_or_its_nearest_ancestor(tree: str) -> None:
    os.setxattr(_dir(tree, f"{APP}/firefox.scope"), XATTR_AVOID, b"1")
    os.setxattr(_dir(tree, "/user.slice/user-1000.slice/session-1.scope"), XATTR_OMIT, b"1")
    os.setxattr(_dir(tree, "/system.slice"), XATTR_OMIT, b"1")
    cg = v2(tree)
    assert cg.preference(CgroupRef(f"{APP}/firefox.scope", True)) == "avoid"
    assert cg.preference(CgroupRef("/user.slice/user-1000.slice/session-1.scope", True)) == "omit"
    assert cg.preference(CgroupRef("/system.slice/db.service", True)) == "omit"  # inherited
    assert cg.preference(CgroupRef(f"{APP}/build.service", True)) is None


@pytest.mark.skipif(os.geteuid() != 0, reason="needs chown")
def test_preferences_of_a_user_owned_cgroup_are_not_believed(tree: str) -> None:
    d = _dir(tree, f"{APP}/firefox.scope")
    os.setxattr(d, XATTR_OMIT, b"1")
    os.chown(d, 1000, 1000)  # a delegated cgroup: its owner could set this itself
    assert v2(tree).preference(CgroupRef(f"{APP}/firefox.scope", True)) is None


def test_xattr_value_zero_is_false(tree: str) -> None:
    d = _dir(tree, f"{APP}/firefox.scope")
    os.setxattr(d, XATTR_AVOID, b"0")
    assert v2(tree).preference(CgroupRef(f"{APP}/firefox.scope", True)) is None


# -- the cgroup-aware choice (pure) --------------------------------------------------
def stat(path: str, pids: tuple[int, ...], mem: int, psi: float, pref: str | None = None) -> LeafStat:
    return LeafStat(CgroupRef(path, True), pids, mem, psi, pref)


def test_choose_by_pressure_then_memory() -> None:
    leaves = [stat("/a", (1,), 100, 10.0), stat("/b", (2,), 50, 30.0), stat("/c", (3,), 500, 30.0)]
    assert choose_leaf(leaves, "pressure").cgroup.path == "/c"  # tie on pressure: more memory
    assert choose_leaf(leaves, "memory").cgroup.path == "/c"
    assert choose_leaf(leaves[:2], "memory").cgroup.path == "/a"


def test_choose_skips_empty_and_omitted_and_takes_avoided_last() -> None:
    leaves = [stat("/empty", (), 10**9, 99.0), stat("/omit", (1,), 10**9, 99.0, "omit"),
              stat("/avoid", (2,), 10**9, 99.0, "avoid"), stat("/small", (3,), 1, 0.0)]
    assert choose_leaf(leaves, "pressure").cgroup.path == "/small"
    assert choose_leaf(leaves[:3], "pressure").cgroup.path == "/avoid"
    assert choose_leaf(leaves[:2], "memory") is None


def test_leaf_stats_from_the_fixture_tree() -> None:
    cg = v2()
    stats = [LeafStat.read(cg, c, cg.procfs) for c in cg.leaves("/user.slice")]
    assert choose_leaf(stats, "pressure").cgroup.path == f"{APP}/build.service"  # some avg10 60
    assert choose_leaf(stats, "memory").cgroup.path == "/user.slice/user-1000.slice/session-1.scope"  # 4 GiB


# -- group kill safety (no signal is sent in these tests) ---------------------------------
def test_group_killer_refuses_root_and_cgroups_holding_pid_1() -> None:
    cg = v2()
    gk = GroupKiller(cg.procfs, cg, lambda: Level.TERM, lambda *a, **k: None)
    assert gk.refuse(CgroupRef("/", True)) == "root cgroup"
    assert gk.refuse(CgroupRef("/init.scope", True)) == "holds pid 1 or pyoomd itself"
    assert gk.refuse(CgroupRef(f"{APP}/empty.scope", True)).startswith("no members")
    assert gk.refuse(CgroupRef(f"{APP}/build.service", True)) is None


# -- the real unified hierarchy ---------------------------------------------------------
@pytest.mark.skipif(not os.path.exists(os.path.join(REAL_UNIFIED, "memory.pressure")),
                    reason=f"no cgroup v2 PSI files at {REAL_UNIFIED}")
def test_real_cgroup_v2_pressure_files() -> None:
    real = Cgroups(Procfs())
    own = real.of_pid(os.getpid())
    assert own is not None
    v2_own = CgroupRef(own.path, True) if own.v2 else CgroupRef("/", True)
    psi = real.pressure(v2_own)
    assert isinstance(psi, Pressure) and isinstance(psi.some, PsiLine)
    assert 0.0 <= psi.some.avg10 <= 100.0
    assert os.getpid() in real.members(v2_own)
    assert real.oom_group(v2_own) in (False, True)  # absent without the memory controller: False
