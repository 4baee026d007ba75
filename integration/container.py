"""The DaemonSet's pod, run with podman: the image (packaging/container/build.sh),
``podman run`` flags translated from packaging/kubernetes/daemonset.yaml, the
config directory the ConfigMap would mount, and the cgroups podman makes,
kept below our own and removed afterwards.

podman here: runc (crun refuses this machine's hybrid cgroups), the cgroupfs
manager, and a containers.conf whose default_ulimits is empty (raising
RLIMIT_NPROC needs CAP_SYS_RESOURCE, which this machine does not have).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
KDIR = ROOT / "packaging" / "kubernetes"
BUILD = ROOT / "packaging" / "container" / "build.sh"
CGROUP_FS = "/sys/fs/cgroup"
CONTAINERS_CONF = """\
[containers]
default_ulimits = []

[engine]
cgroup_manager = "cgroupfs"
runtime = "runc"
events_logger = "file"
"""
# Linux capability numbers (linux/capability.h) of the ones the manifest may add.
CAP_NUMBERS = {"KILL": 5, "IPC_LOCK": 14, "SYS_PTRACE": 19, "SYS_RESOURCE": 24, "SETUID": 7, "SETGID": 6}


def why_no_podman() -> str | None:
    for tool in ("podman", "runc", "debootstrap", "dpkg-deb"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (.ci/run installs podman, runc and debootstrap)"
    return None


def manifests() -> dict[str, dict[str, Any]]:
    out = {}
    for f in sorted(KDIR.glob("*.yaml")):
        for d in yaml.safe_load_all(f.read_text()):
            if d:
                out[d["kind"]] = d
    return out


def podman_env(conf_dir: Path) -> dict[str, str]:
    conf = conf_dir / "containers.conf"
    conf.write_text(CONTAINERS_CONF)
    env = dict(os.environ)
    env["CONTAINERS_CONF"] = str(conf)
    return env


PODMAN_GLOBAL = ["podman", "--runtime", "runc", "--cgroup-manager", "cgroupfs"]


def bounding_caps() -> set[str]:
    with open("/proc/self/status") as f:
        bnd = next(int(line.split()[1], 16) for line in f if line.startswith("CapBnd:"))
    return {name for name, bit in CAP_NUMBERS.items() if bnd >> bit & 1}


def config_dir(dest: Path, cm: dict[str, Any], ds: dict[str, Any], config_text: str | None = None) -> Path:
    """What the DaemonSet's config volume shows: the ConfigMap's items at
    their paths, read-only for all (defaultMode), directories 0755, root's."""
    vol = next(v for v in ds["spec"]["template"]["spec"]["volumes"] if "configMap" in v)
    mode = vol["configMap"].get("defaultMode", 0o644)
    dest.mkdir(parents=True, exist_ok=True)
    os.chmod(dest, 0o755)
    for item in vol["configMap"]["items"]:
        path = dest / item["path"]
        path.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(path.parent, 0o755)
        text = cm["data"][item["key"]]
        if item["key"] == "config.yaml" and config_text is not None:
            text = config_text
        path.write_text(text)
        os.chmod(path, mode)
    return dest


def run_args(ds: dict[str, Any], etc_dir: Path, cgroup_parent: str, name: str,
             caps_available: set[str], network: str = "none") -> tuple[list[str], list[str], list[str]]:
    """(podman run flags, argv after the image, capabilities left out because
    this machine's bounding set lacks them), from the DaemonSet."""
    spec = ds["spec"]["template"]["spec"]
    (c,) = spec["containers"]
    sc = c["securityContext"]
    flags = ["--name", name, "--network", network, "--cgroup-parent", cgroup_parent]
    if spec.get("hostPID"):
        flags.append("--pid=host")
    assert sc["capabilities"]["drop"] == ["ALL"]
    flags.append("--cap-drop=all")
    missing = [cap for cap in sc["capabilities"]["add"] if cap not in caps_available]
    for cap in sc["capabilities"]["add"]:
        if cap not in missing:
            flags.append(f"--cap-add={cap}")
    assert sc.get("privileged") is False
    if sc.get("allowPrivilegeEscalation") is False:
        flags += ["--security-opt", "no-new-privileges"]
    if sc.get("readOnlyRootFilesystem"):
        flags += ["--read-only", "--read-only-tmpfs=false"]  # Kubernetes adds no tmpfs
    flags += ["--user", str(sc.get("runAsUser", 0))]
    mem = c["resources"]["limits"]["memory"]
    assert mem.endswith("Mi")
    flags.append(f"--memory={int(mem[:-2])}m")
    vols = {v["name"]: v for v in spec["volumes"]}
    for m in c["volumeMounts"]:
        v = vols[m["name"]]
        ro = ":ro" if m.get("readOnly") else ":rw"
        if "configMap" in v:
            flags += ["-v", f"{etc_dir}:{m['mountPath']}{ro}"]
        elif "emptyDir" in v:
            size = v["emptyDir"].get("sizeLimit", "1Mi")
            flags += ["--mount", f"type=tmpfs,destination={m['mountPath']},tmpfs-size={int(size[:-2])}m"]
        elif "hostPath" in v:
            flags += ["-v", f"{v['hostPath']['path']}:{m['mountPath']}{ro}"]
        else:
            raise AssertionError(f"volume {m['name']}: no podman equivalent written")
    flags += ["--entrypoint", c["command"][0]]
    return flags, [*c["command"][1:], *c["args"]], missing


def liveness(ds: dict[str, Any]) -> list[str]:
    (c,) = ds["spec"]["template"]["spec"]["containers"]
    return list(c["livenessProbe"]["exec"]["command"])


def own_memory_cgroup() -> str:
    with open("/proc/self/cgroup") as f:
        for line in f:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            if "memory" in controllers.split(","):
                return path
    with open("/proc/self/cgroup") as f:  # pure v2
        return next(line.rstrip("\n").split(":", 2)[2] for line in f if line.startswith("0::"))


class CgroupParent:
    """A ``--cgroup-parent`` below our own memory cgroup.  With the cgroupfs
    manager on v1, runc makes the same path in every hierarchy (cpu, pids,
    ... where ours is the root): remove() takes away everything below it
    and every directory of the path that did not exist before."""

    def __init__(self, under: str | None = None) -> None:
        base = under if under is not None else own_memory_cgroup()
        self.path = f"{base.rstrip('/')}/pyoomd-ct-{uuid.uuid4().hex[:8]}"
        if os.path.exists(os.path.join(CGROUP_FS, "cgroup.procs")):
            self.hierarchies = [CGROUP_FS]  # pure v2: one tree
        else:  # v1 or hybrid: each mounted hierarchy (unified included)
            self.hierarchies = [e.path for e in os.scandir(CGROUP_FS)
                                if e.is_dir(follow_symlinks=False) and os.path.ismount(e.path)]
        self.existed: set[str] = set()
        for h in self.hierarchies:
            for d in self._chain(h):
                if os.path.isdir(d):
                    self.existed.add(d)

    def _chain(self, hierarchy: str) -> list[str]:
        parts = self.path.strip("/").split("/")
        return [os.path.join(hierarchy, *parts[: i + 1]) for i in range(len(parts))]

    def remove(self, wait_s: float = 10.0) -> list[str]:
        """Directories that could not be removed (still in use after
        ``wait_s``: conmon may still be finishing a ``--rm`` container's
        clean-up when podman run returns)."""
        import time

        deadline = time.monotonic() + wait_s
        while True:
            left = self._remove_once()
            if not left or time.monotonic() > deadline:
                return left
            time.sleep(0.2)

    def _remove_once(self) -> list[str]:
        left = []
        for h in self.hierarchies:
            leaf = os.path.join(h, self.path.strip("/"))
            if os.path.isdir(leaf):
                for dirpath, _dirs, _files in sorted(os.walk(leaf, topdown=False), key=lambda t: -len(t[0])):
                    try:
                        os.rmdir(dirpath)
                    except OSError:
                        left.append(dirpath)
            for d in reversed(self._chain(h)[:-1]):
                if d not in self.existed and os.path.isdir(d):
                    try:
                        os.rmdir(d)
                    except OSError:
                        left.append(d)
        return left


def build_image(tag: str, timeout_s: float = 600) -> tuple[int, float, str]:
    """packaging/container/build.sh --tag TAG: (size in bytes, seconds, log)."""
    import time

    t0 = time.monotonic()
    r = subprocess.run(["bash", str(BUILD), "--tag", tag], capture_output=True, text=True, timeout=timeout_s,
                       check=False)
    took = time.monotonic() - t0
    if r.returncode != 0:
        raise AssertionError(f"build.sh failed ({r.returncode}):\n{r.stderr[-4000:]}")
    lines = r.stdout.strip().splitlines()
    assert lines[-1] == tag, lines
    size = int(lines[-2].split()[1])
    return size, took, r.stderr
