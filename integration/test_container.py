"""The DaemonSet's pod for real, with podman: the image built by
packaging/container/build.sh (once per test session, timed), run with the
flags packaging/kubernetes/daemonset.yaml asks for (hostPID, exactly its
capabilities, a read-only root, its mounts, its memory limit, its liveness
command), its config and policies as the ConfigMap would mount them.

- dry-run, with the machine's own PID namespace (--pid=host): it sees the
  host's processes (``pyoomd rank`` inside lists one started here, by its
  host pid), reads PSI, serves /metrics in its own network namespace,
  answers the liveness command; its start time and RSS are measured.
- a real kill, with the whole podman run inside a private PID namespace
  (``unshare --pid --fork --mount-proc``, integration/container_scene.py as
  its PID 1), so "host" PID means the scene's: the hog dies, the bystanders
  live.  Never a container that may kill with the machine's own PID
  namespace.

Containers, images and the cgroups podman makes (below our own memory
cgroup, removed afterwards) are all cleaned up.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from integration import container as ct
from integration.harness import MARGIN_MIB, SafetyCgroup, scenario_slot

WHY = ct.why_no_podman()
pytestmark = pytest.mark.skipif(WHY is not None, reason=WHY or "")
HERE = Path(__file__).resolve().parent
VERSION = ct.ROOT.joinpath("pyproject.toml").read_text().split('version = "', 1)[1].split('"', 1)[0]
MIB = 1 << 20


def podman(env: dict[str, str], *args: str, timeout: float = 60, check: bool = True) -> subprocess.CompletedProcess[str]:
    r = subprocess.run([*ct.PODMAN_GLOBAL, *args], capture_output=True, text=True, timeout=timeout, env=env,
                       check=False)
    if check and r.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)}: rc={r.returncode}\n{r.stderr[-3000:]}")
    return r


@pytest.fixture(scope="session")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return ct.podman_env(tmp_path_factory.mktemp("podman"))


@pytest.fixture(scope="session")
def image(env: dict[str, str]) -> Iterator[dict[str, Any]]:
    """Built once per session: {tag, size, build_s}; removed at the end."""
    tag = f"localhost/pyoomd:{VERSION}-it{uuid.uuid4().hex[:6]}"
    size, took, _log = ct.build_image(tag)
    print(f"\nimage {tag}: {size / MIB:.1f} MiB, built in {took:.1f} s")
    try:
        yield {"tag": tag, "size": size, "build_s": took}
    finally:
        podman(env, "rmi", tag, check=False)


@pytest.fixture
def parent() -> Iterator[ct.CgroupParent]:
    cg = ct.CgroupParent()
    try:
        yield cg
    finally:
        left = cg.remove()
        assert not left, f"cgroups left behind: {left}"


def test_image_has_the_package_and_runs(image: dict[str, Any], env: dict[str, str],
                                       parent: ct.CgroupParent) -> None:
    assert image["size"] < 200 * MIB, image
    r = podman(env, "run", "--rm", "--network", "none", "--cgroup-parent", parent.path, "--entrypoint", "pyoomd",
               image["tag"], "check", "--strict", "/etc/pyoomd/policies.d", check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    inspect = json.loads(podman(env, "image", "inspect", image["tag"]).stdout)[0]
    assert inspect["Config"]["Entrypoint"] == ["/usr/bin/pyoomd"]


def dry_run_config(cm: dict[str, Any]) -> str:
    text: str = cm["data"]["config.yaml"]
    assert "dry_run: false" in text
    return text.replace("dry_run: false", "dry_run: true")


def test_dry_run_with_the_hosts_pid_namespace(image: dict[str, Any], env: dict[str, str], parent: ct.CgroupParent,
                                              tmp_path: Path) -> None:
    docs = ct.manifests()
    ds, cm = docs["DaemonSet"], docs["ConfigMap"]
    etc = ct.config_dir(tmp_path / "etc", cm, ds, dry_run_config(cm))
    name = f"pyoomd-it-{uuid.uuid4().hex[:8]}"
    flags, argv, missing = ct.run_args(ds, etc, parent.path, name, ct.bounding_caps())
    assert "--pid=host" in flags
    argv = [*argv, "--dry-run"]  # twice sure: the config says so too
    marker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", "pyoomd-it-marker"])
    try:
        t0 = time.monotonic()
        podman(env, "run", "-d", *flags, image["tag"], *argv)
        try:
            live_s = _wait_live(env, name, ct.liveness(ds), t0)
            pid = int(podman(env, "inspect", "--format", "{{.State.Pid}}", name).stdout)
            time.sleep(2)  # idle after start: the daemon, and the liveness probe's peak
            st_idle, peak_idle = _vm(pid), _cgroup_peak(pid)
            # the host's processes, by their host pids
            rank = json.loads(podman(env, "exec", name, "pyoomd", "rank", "--top", "100000", "--json").stdout)
            pids = {c["pid"] for c in _candidates(rank)}
            assert marker.pid in pids, f"marker {marker.pid} not among {len(pids)} candidates"
            # PSI, and /metrics in the pod's own network namespace
            sample = json.loads(podman(env, "exec", name, "pyoomd", "sample", "--json").stdout)
            host_psi = Path("/proc/pressure/memory").read_text()  # after: the host's total is >= the pod's
            metrics = podman(env, "exec", name, "python3", "-c",
                             "import urllib.request; print(urllib.request.urlopen("
                             "'http://127.0.0.1:9101/metrics', timeout=5).read().decode())").stdout
            status = json.loads(podman(env, "exec", name, *ct.liveness(ds), "--json").stdout)
            st, peak = _vm(pid), _cgroup_peak(pid)
            logs = podman(env, "logs", name).stdout + podman(env, "logs", name).stderr
        finally:
            podman(env, "stop", "-t", "3", name, check=False)
            podman(env, "rm", name, check=False)
    finally:
        marker.kill()
        marker.wait(timeout=5)
    startup = next(json.loads(line) for line in logs.splitlines() if '"startup"' in line)
    assert startup["dry_run"] is True
    assert startup["policy_files"] == ["/etc/pyoomd/policies.d/default.yaml",
                                       "/etc/pyoomd/policies.d/kubernetes.yaml"]
    assert startup["mlockall"] == "ok"
    # PSI is the host's (system-wide): a machine that never stalled on memory has total 0
    host_some_us = int(host_psi.split("total=")[1].split()[0])
    assert 0 <= sample["psi"]["some"]["total_us"] <= host_some_us and sample["backend"] == "cffi", sample
    assert startup["psi"] is True and startup["wakeup"].startswith("psi-trigger")
    assert "pyoomd_psi_some_avg10" in metrics and "pyoomd_mem_available_bytes" in metrics
    assert status["pid"] == pid and status.get("dry_run") is True, status
    limit = ds["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["memory"]
    assert peak is None or peak < int(limit[:-2]) * MIB
    print(f"\ncontainer: live {live_s:.2f} s after podman run; idle: VmRSS {st_idle['VmRSS']}, cgroup peak "
          f"{_mib(peak_idle)} (daemon, validation child, liveness probe); after rank, sample, /metrics and status "
          f"inside: VmRSS {st['VmRSS']}, VmHWM {st['VmHWM']}, cgroup peak {_mib(peak)} (limit {limit}); "
          f"capabilities this machine lacks (left out): {missing or 'none'}")


def _vm(pid: int) -> dict[str, str]:
    with open(f"/proc/{pid}/status") as f:
        return {k: v.strip() for k, v in (line.split(":", 1) for line in f)}


def _mib(n: int | None) -> str:
    return "?" if n is None else f"{n / MIB:.1f} MiB"


def _cgroup_peak(pid: int) -> int | None:
    """The container's peak memory: v1 memory.max_usage_in_bytes, v2 memory.peak."""
    lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
    v1 = [ln.split(":", 2)[2] for ln in lines if ":memory:" in ln]
    path = (Path(ct.CGROUP_FS, "memory", v1[0].lstrip("/"), "memory.max_usage_in_bytes") if v1 else
            Path(ct.CGROUP_FS, next(ln.split(":", 2)[2] for ln in lines if ln.startswith("0::")).lstrip("/"),
                 "memory.peak"))
    try:
        return int(path.read_text())
    except (OSError, ValueError):
        return None


def _candidates(rank: Any) -> list[dict[str, Any]]:
    if isinstance(rank, dict):
        for key in ("candidates", "ranked"):
            if key in rank:
                return list(rank[key])
    return list(rank)


def _wait_live(env: dict[str, str], name: str, cmd: list[str], t0: float, timeout_s: float = 30) -> float:
    while True:
        r = podman(env, "exec", name, *cmd, check=False, timeout=20)
        if r.returncode == 0:
            return time.monotonic() - t0
        if time.monotonic() - t0 > timeout_s:
            logs = podman(env, "logs", name, check=False)
            raise AssertionError(f"liveness never passed ({r.returncode}): {r.stderr}\n{logs.stderr[-2000:]}")
        time.sleep(0.2)


def test_liveness_fails_without_a_daemon(image: dict[str, Any], env: dict[str, str], parent: ct.CgroupParent,
                                         tmp_path: Path) -> None:
    ds = ct.manifests()["DaemonSet"]
    r = podman(env, "run", "--rm", "--network", "none", "--cgroup-parent", parent.path,
               "--mount", "type=tmpfs,destination=/run/pyoomd", "--entrypoint", ct.liveness(ds)[0], image["tag"],
               *ct.liveness(ds)[1:], check=False)
    assert r.returncode == 69, r.stdout + r.stderr


def test_real_kill_inside_a_private_pid_namespace(image: dict[str, Any], env: dict[str, str],
                                                  tmp_path: Path) -> None:
    docs = ct.manifests()
    ds, cm = docs["DaemonSet"], docs["ConfigMap"]
    etc = ct.config_dir(tmp_path / "etc", cm, ds)
    name = f"pyoomd-it-{uuid.uuid4().hex[:8]}"
    safety = SafetyCgroup()
    under = None
    if safety.path is not None:
        under = "/" + os.path.relpath(safety.path, os.path.join(ct.CGROUP_FS, "memory"))
    parent = ct.CgroupParent(under)
    flags, argv, missing = ct.run_args(ds, etc, parent.path, name, ct.bounding_caps())
    assert "--dry-run" not in argv
    # The daemon kills the hog just past TERM, so the hog holds about
    # term_below then; this VM may return up to LATE_FREE_MIB of that late,
    # and podman, conmon, the daemon, each liveness exec and the busy machine
    # around come out of the MemAvailable read before the pod started.  With
    # TERM more than MARGIN_MIB below it, memory is back above TERM after the
    # kill all the same (at 600 MiB a busy run stayed below TERM and the
    # daemon killed a 48 MiB bystander next).
    term_below = 600 + MARGIN_MIB
    spec = {"podman": ct.PODMAN_GLOBAL, "name": name, "flags": flags, "image": image["tag"], "argv": argv,
            "liveness": ct.liveness(ds), "config_path": str(etc / "config.yaml"),
            "config_text": cm["data"]["config.yaml"], "term_below_mib": term_below,
            "hog_max_mib": term_below + MARGIN_MIB, "kill_past_mib": 700, "hog_rate": 256,
            "bystanders": [{"max": 32}, {"max": 48}], "timeout": 40}
    cmd = ["unshare", "--pid", "--fork", "--mount-proc", sys.executable, str(HERE / "container_scene.py"),
           json.dumps(spec)]
    try:
        with scenario_slot():
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=spec["timeout"] + 120, env=env,
                               preexec_fn=safety.enter, cwd=str(ct.ROOT))
    finally:
        left = parent.remove()
        safety.remove()
    assert r.returncode == 0 and r.stdout.strip(), f"rc={r.returncode}\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}"
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert not left, f"cgroups left behind: {left}"
    assert "error" not in out, out
    assert out["removed"], out
    kills = [e for e in out["events"] if e.get("event") == "kill"]
    assert kills, [e.get("event") for e in out["events"]]
    assert kills[0]["pid"] == out["hog_pid"] and kills[0]["dry_run"] is False, kills[0]
    assert len(kills) == 1, [(k["pid"], k["comm"]) for k in kills]
    assert out["hog_returncode"] is not None and out["hog_returncode"] < 0, out  # died by a signal
    assert all(out["bystanders_alive"]), out
    assert out["liveness_after"] == 0
    exited = [e for e in out["events"] if e.get("event") == "victim_exited"]
    print(f"\nkill scene: TERM {out['term_mib']} MiB (MemAvailable {out['avail_mib']} at start), "
          f"{kills[0]['signal']} to the hog (pid {out['hog_pid']}), exit after "
          f"{exited[0]['ms'] if exited else '?'} ms, live {out['start_to_live_s']} s after podman run, "
          f"capabilities left out here: {missing or 'none'}")
