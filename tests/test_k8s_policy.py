"""policies/kubernetes.yaml on a fake Kubernetes node: the kubelet, the
container runtime and the CNI daemons are never chosen, a BestEffort pod's
container is, and it goes whole (`kill: cgroup`), for both kubelet cgroup
drivers (systemd: kubepods.slice/..., cgroupfs: /kubepods/...) on cgroup v2,
cgroupfs on a v1 memory hierarchy, and the paths a cgroup namespace shows.

The daemon runs in dry-run over a fake /proc and a fixture cgroup tree built
here.  The BestEffort container's two members are real ``sleep`` children
of this test (the group killer opens a pidfd for each member; dry-run sends
nothing), so the whole dry-run kill path runs, group_kill event included.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from helpers import FakeProc, FakeSampler, build
from logcapture import Log

from pyoomd.daemon import Daemon
from pyoomd.policy.load import load_policies
from pyoomd.sense import snapshot
from pyoomd.sense.procfs import Procfs
from pyoomd.settings.load import load_config

ROOT = Path(__file__).resolve().parent.parent
POLICIES = [str(ROOT / "policies" / "default.yaml"), str(ROOT / "policies" / "kubernetes.yaml")]
MIB = 1024
POD_BE = "pod5f3c1d2e-0000-4000-8000-00000000be01"
POD_BU = "pod5f3c1d2e-0000-4000-8000-00000000bu02"
POD_GU = "pod5f3c1d2e-0000-4000-8000-00000000gu03"
CID_BE, CID_BU, CID_GU, CID_CNI = "a1" * 32, "b2" * 32, "c3" * 32, "d4" * 32


@dataclass(frozen=True)
class Driver:
    name: str
    v2: bool
    besteffort: str  # the BestEffort container's cgroup
    burstable: str
    guaranteed: str
    cni: str  # calico-node's container (a Burstable pod)
    kubelet: str = "/system.slice/kubelet.service"
    containerd: str = "/system.slice/containerd.service"


SYSTEMD = Driver(
    "systemd", True,
    f"/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-{POD_BE}.slice/cri-containerd-{CID_BE}.scope",
    f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-{POD_BU}.slice/cri-containerd-{CID_BU}.scope",
    f"/kubepods.slice/kubepods-{POD_GU}.slice/cri-containerd-{CID_GU}.scope",
    f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-{POD_BU}x.slice/cri-containerd-{CID_CNI}.scope",
)
CGROUPFS = Driver(
    "cgroupfs", True,
    f"/kubepods/besteffort/{POD_BE}/{CID_BE}",
    f"/kubepods/burstable/{POD_BU}/{CID_BU}",
    f"/kubepods/{POD_GU}/{CID_GU}",
    f"/kubepods/burstable/{POD_BU}x/{CID_CNI}",
)
CGROUPFS_V1 = Driver("cgroupfs-v1", False, CGROUPFS.besteffort, CGROUPFS.burstable, CGROUPFS.guaranteed,
                     CGROUPFS.cni)


@pytest.fixture
def members() -> Iterator[list[int]]:
    """Real processes standing in for the BestEffort container's two members
    and for the Burstable java (the killer opens a pidfd for its victim)."""
    procs = [subprocess.Popen(["sleep", "60"]) for _ in range(3)]
    try:
        yield [p.pid for p in procs]
    finally:
        for p in procs:
            p.kill()
            p.wait(timeout=5)


def _cg(driver: Driver, path: str) -> bytes:
    if driver.v2:
        return f"0::{path}\n".encode()
    return f"12:pids:{path}\n5:memory:{path}\n1:name=systemd:{path}\n".encode()


def node(tmp_path: Path, driver: Driver, be_pids: list[int]) -> list[FakeProc]:
    """A node's processes.  The agents get the highest kernel scores on
    purpose (as if their oom_score_adj were not set): only the policy
    protects them."""
    be_main, be_child, java = be_pids
    return [
        FakeProc(3001, 1900, comm=b"kubelet", uid=0, exe="/usr/bin/kubelet", rss_kib=3000 * MIB,
                 cgroup=_cg(driver, driver.kubelet)),
        FakeProc(3002, 1800, comm=b"containerd", uid=0, exe="/usr/bin/containerd", rss_kib=2500 * MIB,
                 cgroup=_cg(driver, driver.containerd)),
        FakeProc(3003, 1700, comm=b"containerd-shim", uid=0, exe="/usr/bin/containerd-shim-runc-v2",
                 cgroup=_cg(driver, driver.containerd)),
        FakeProc(3004, 1600, comm=b"calico-node", uid=0, exe="/usr/bin/calico-node", rss_kib=800 * MIB,
                 cgroup=_cg(driver, driver.cni)),
        # a root process in a Burstable pod calling itself kubelet: a name, not an identity
        FakeProc(3005, 300, comm=b"kubelet", uid=0, exe="/app/kubelet", rss_kib=100 * MIB,
                 cgroup=_cg(driver, driver.burstable)),
        # the biggest workload: Burstable, 6 GiB
        FakeProc(java, 990, comm=b"java", uid=1000, exe="/usr/bin/java", rss_kib=6000 * MIB,
                 cgroup=_cg(driver, driver.burstable)),
        FakeProc(3007, 3, comm=b"postgres", uid=999, exe="/usr/lib/postgresql/16/bin/postgres",
                 rss_kib=4000 * MIB, adj=-997, cgroup=_cg(driver, driver.guaranteed)),
        # the BestEffort container: its main process and a worker
        FakeProc(be_main, 1020, comm=b"python3", uid=1000, exe="/usr/bin/python3.11", rss_kib=700 * MIB,
                 adj=1000, cgroup=_cg(driver, driver.besteffort)),
        FakeProc(be_child, 1005, comm=b"python3", uid=1000, exe="/usr/bin/python3.11", rss_kib=200 * MIB,
                 adj=1000, cgroup=_cg(driver, driver.besteffort)),
    ]


def cgroup_tree(root: Path, driver: Driver, procs: list[FakeProc]) -> Path:
    """cgroup.procs of every leaf (v2: the unified root; v1: memory/)."""
    base = root if driver.v2 else root / "memory"
    by_path: dict[str, list[int]] = {}
    for p in procs:
        path = p.cgroup.decode().splitlines()[0].split(":", 2)[2]
        by_path.setdefault(path, []).append(p.pid)
    for path, pids in by_path.items():
        d = base / path.lstrip("/")
        d.mkdir(parents=True, exist_ok=True)
        (d / "cgroup.procs").write_text("".join(f"{pid}\n" for pid in pids))
        if driver.v2:
            (d / "cgroup.kill").write_text("")
    (base / "cgroup.procs").write_text("1\n")
    return root


def daemon(tmp_path: Path, procs: list[FakeProc], cgroup_root: Path) -> tuple[Daemon, Log]:
    fake = build(tmp_path / "proc", procs)
    loaded = load_policies(POLICIES, hostname="node-1", euid=1000)  # trust checks are the daemon's, as root
    assert not loaded.refused and not loaded.warnings
    settings = load_config(None, {"dry_run": True, "growth": {"enabled": False}})
    log = Log()
    return Daemon(settings, Procfs(fake.root, cgroup_root=str(cgroup_root)), FakeSampler(), log,
                  policy=loaded.policy), log


def kill_events(log: Log) -> tuple[dict[str, Any], dict[str, Any] | None]:
    (kill,) = log.named("kill")
    groups = log.named("group_kill")
    return kill, groups[0] if groups else None


AGENTS = {3001, 3002, 3003, 3004}


@pytest.mark.parametrize("driver", [SYSTEMD, CGROUPFS, CGROUPFS_V1], ids=lambda d: d.name)
def test_besteffort_container_goes_whole_and_the_agents_never(tmp_path: Path, driver: Driver,
                                                              members: list[int]) -> None:
    procs = node(tmp_path, driver, members)
    d, log = daemon(tmp_path, procs, cgroup_tree(tmp_path / "cgroup", driver, procs))
    d.tick()
    kill, group = kill_events(log)
    assert kill["pid"] == members[0] and kill["dry_run"] is True
    assert "besteffort-pods" in kill["rules"]
    assert not AGENTS & {c["pid"] for c in kill["candidates"]}
    assert group is not None, log.events
    assert group["cgroup"] == driver.besteffort and group["why"] == "policy kill: cgroup"
    assert sorted(group["members"]) == sorted(members[:2])
    assert group["kill_mode"] == ("cgroup.kill" if driver.v2 else "pidfd each")
    # each agent is protected by its own rule; the impostor named kubelet is not
    rules = {p.pid: d.policy.evaluate(info).protect_rule for p in procs
             if (info := snapshot.read_proc(d.procfs, p.pid)) is not None}
    assert rules[3001] == "keep-kubelet"
    assert rules[3002] == rules[3003] == "keep-container-runtime"
    assert rules[3004] == "keep-cni-daemons"
    assert rules[3005] is None


@pytest.mark.parametrize("driver", [SYSTEMD, CGROUPFS], ids=lambda d: d.name)
def test_without_besteffort_pods_the_biggest_workload_goes_not_an_agent(tmp_path: Path, driver: Driver,
                                                                        members: list[int]) -> None:
    procs = [p for p in node(tmp_path, driver, members) if p.pid not in members[:2]]
    d, log = daemon(tmp_path, procs, cgroup_tree(tmp_path / "cgroup", driver, procs))
    d.tick()
    kill, group = kill_events(log)
    assert kill["pid"] == members[2] and group is None  # Burstable java, alone: no kill: cgroup for it
    assert not AGENTS & {c["pid"] for c in kill["candidates"]}


def test_only_the_agents_left_means_no_candidate(tmp_path: Path, members: list[int]) -> None:
    procs = [p for p in node(tmp_path, SYSTEMD, members) if p.pid in AGENTS]
    d, log = daemon(tmp_path, procs, cgroup_tree(tmp_path / "cgroup", SYSTEMD, procs))
    d.tick()
    assert not log.named("kill") and log.named("no_candidate")


# What /proc/PID/cgroup shows inside a container with its own cgroup namespace
# (cgroup v2 under containerd/CRI-O), pyoomd's container being a Burstable pod's:
# paths relative to it, the common ancestor's name gone.
NAMESPACED = Driver(
    "namespaced-systemd", True,
    f"/../../../kubepods-besteffort.slice/kubepods-besteffort-{POD_BE}.slice/cri-containerd-{CID_BE}.scope",
    f"/../../kubepods-burstable-{POD_BU}.slice/cri-containerd-{CID_BU}.scope",
    f"/../../../kubepods-{POD_GU}.slice/cri-containerd-{CID_GU}.scope",
    "/../cri-containerd-" + CID_CNI + ".scope",
    kubelet="/../../../../system.slice/kubelet.service", containerd="/../../../../system.slice/containerd.service",
)
NAMESPACED_CGROUPFS = Driver(
    "namespaced-cgroupfs", True,
    f"/../../../besteffort/{POD_BE}/{CID_BE}", f"/../{CID_BU}", f"/../../../{POD_GU}/{CID_GU}",
    f"/../../{POD_BU}x/{CID_CNI}",
    kubelet="/../../../../system.slice/kubelet.service", containerd="/../../../../system.slice/containerd.service",
)


# Where pyoomd's own container is in the node's tree, for each namespaced view.
OWN = {"namespaced-systemd": "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-podPY.slice/"
                             "cri-containerd-" + "e5" * 32 + ".scope",
       "namespaced-cgroupfs": "/kubepods/burstable/podPY/" + "e5" * 32}


def host_path(rel: str, own: str) -> str:
    parts = rel.strip("/").split("/")
    up = sum(1 for _ in iter(lambda: parts[0] == ".." and parts.pop(0), False))
    base = own.strip("/").split("/")
    return "/" + "/".join(base[: len(base) - up] + parts)


@pytest.mark.parametrize("driver", [NAMESPACED, NAMESPACED_CGROUPFS], ids=lambda d: d.name)
def test_cgroup_namespace_view_resolved_in_the_nodes_tree(tmp_path: Path, driver: Driver,
                                                          members: list[int]) -> None:
    """pyoomd in its own cgroup namespace with the node's tree mounted (the
    DaemonSet's hostPath): the relative paths are found in the node's tree
    (pid 1's path gives the depth, our own pid the directory) and the
    BestEffort container goes whole."""
    own = OWN[driver.name]
    procs = node(tmp_path, driver, members)
    scene = [*procs, FakeProc(1, 0, comm=b"systemd", uid=0, exe="/usr/lib/systemd/systemd",
                              cgroup=b"0::/../../../../init.scope\n"),
             FakeProc(os.getpid(), 5, comm=b"pyoomd", uid=0, exe="/usr/bin/python3.11", cgroup=b"0::/\n")]
    tree = tmp_path / "node-cgroup"
    by_path: dict[str, list[int]] = {}
    for p in scene:
        rel = p.cgroup.decode().split(":", 2)[2].strip()
        by_path.setdefault(host_path(rel, own) if rel.startswith("/..") else own if rel == "/" else rel,
                           []).append(p.pid)
    for path, pids in by_path.items():
        d = tree / path.lstrip("/")
        d.mkdir(parents=True, exist_ok=True)
        (d / "cgroup.procs").write_text("".join(f"{pid}\n" for pid in pids))
        (d / "cgroup.kill").write_text("")
    d, log = daemon(tmp_path, scene, tree)
    assert d.cgroups.namespace_root() == tuple(own.strip("/").split("/"))
    d.tick()
    kill, group = kill_events(log)
    assert kill["pid"] == members[0] and "besteffort-pods" in kill["rules"]
    assert group is not None, log.events
    assert group["cgroup"] == driver.besteffort and group["kill_mode"] == "cgroup.kill"
    assert sorted(group["members"]) == sorted(members[:2])
    assert not AGENTS & {c["pid"] for c in kill["candidates"]}


@pytest.mark.parametrize("driver", [NAMESPACED, NAMESPACED_CGROUPFS], ids=lambda d: d.name)
def test_cgroup_namespace_view_without_the_nodes_tree(tmp_path: Path, driver: Driver,
                                                      members: list[int]) -> None:
    """No node tree mounted (only the namespace's own): the rule still
    matches, the cgroup cannot be found, the group kill is refused (said in
    a group_kill_refused event) and the process alone is killed."""
    procs = node(tmp_path, driver, members)
    d, log = daemon(tmp_path, procs, tmp_path / "cgroup-empty")
    (tmp_path / "cgroup-empty").mkdir()
    d.tick()
    kill, group = kill_events(log)
    assert kill["pid"] == members[0] and "besteffort-pods" in kill["rules"] and group is None
    (refused,) = log.named("group_kill_refused")
    assert refused["cgroup"] == driver.besteffort and refused["why"] == "policy kill: cgroup"
    assert not AGENTS & {c["pid"] for c in kill["candidates"]}


def test_tree_path_arithmetic() -> None:
    from pyoomd.sense.cgroup import Cgroups

    cg = Cgroups(Procfs("/nonexistent-proc", cgroup_root="/nonexistent-cgroup"))
    assert cg.namespace_root() is None  # nothing to read: not resolvable
    assert cg.tree_path("/../../x") == "/../../x" and cg.tree_path("/a/b") == "/a/b"
    cg._ns_root, cg._ns_root_known = ("k.slice", "q.slice", "pod.slice", "c.scope"), True
    assert cg.tree_path("/../../../be.slice/p.slice/c2.scope") == "/k.slice/be.slice/p.slice/c2.scope"
    assert cg.tree_path("/../../../../system.slice/kubelet.service") == "/system.slice/kubelet.service"
    assert cg.tree_path("/..") == "/k.slice/q.slice/pod.slice"
    assert cg.tree_path("/../../../../../escape") == "/../../../../../escape"  # above the root: no directory
    assert cg.tree_path("/sub") == "/k.slice/q.slice/pod.slice/c.scope/sub"  # inside our namespace
    assert cg.tree_path("/") == "/k.slice/q.slice/pod.slice/c.scope"
    cg._ns_root = ()  # not in a namespace (pid 1's path has no ..): paths as they are
    assert cg.tree_path("/a/b") == "/a/b"
