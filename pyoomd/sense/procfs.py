"""Procfs(root): the ONLY place that builds /proc, /sys and cgroup paths.

Tests point ``root`` at a fixture tree; everything else asks this object for
paths.  Readers return bytes; parsing lives in ``parse.py``.
"""

from __future__ import annotations

import os


class Procfs:
    """Paths below a /proc root (and, for cgroups, a /sys/fs/cgroup root)."""

    def __init__(self, root: str = "/proc", cgroup_root: str = "/sys/fs/cgroup", sys_root: str = "/sys") -> None:
        self.root = root.rstrip("/") or "/"
        self.cgroup_root = cgroup_root.rstrip("/")
        self.sys_root = sys_root.rstrip("/")

    # -- system-wide files -------------------------------------------------
    @property
    def meminfo(self) -> str:
        return f"{self.root}/meminfo"

    @property
    def pressure_memory(self) -> str:
        return f"{self.root}/pressure/memory"

    @property
    def uptime(self) -> str:
        return f"{self.root}/uptime"

    @property
    def vmstat(self) -> str:
        return f"{self.root}/vmstat"

    @property
    def loadavg(self) -> str:
        return f"{self.root}/loadavg"

    @property
    def self_pid(self) -> int:
        """Our own pid as this procfs sees it (differs from os.getpid() only
        when root is a fixture tree, where a ``self`` link may be absent)."""
        try:
            return int(os.readlink(f"{self.root}/self"))
        except (OSError, ValueError):
            return os.getpid()

    # -- per-process files -------------------------------------------------
    def pid_dir(self, pid: int) -> str:
        return f"{self.root}/{pid}"

    def pid_file(self, pid: int, name: str) -> str:
        return f"{self.root}/{pid}/{name}"

    def pids(self) -> list[int]:
        """Numeric entries of the root, unsorted.  Never raises for a vanished
        entry: listing /proc is a snapshot."""
        out = []
        for name in os.listdir(self.root):
            if name.isdigit():
                out.append(int(name))
        return out

    def tids(self, pid: int) -> list[int]:
        """Thread ids of a process (its ``task`` entries), unsorted."""
        return [int(n) for n in os.listdir(self.pid_file(pid, "task")) if n.isdigit()]

    def read(self, path: str, limit: int = 1 << 20) -> bytes:
        """Read a whole small file (at most ``limit`` bytes)."""
        with open(path, "rb", buffering=0) as f:
            return f.read(limit)

    def read_pid(self, pid: int, name: str, limit: int = 1 << 20) -> bytes:
        return self.read(self.pid_file(pid, name), limit)

    def readlink_pid(self, pid: int, name: str) -> str:
        return os.readlink(self.pid_file(pid, name))

    # -- cgroups -------------------------------------------------------------
    def cgroup_v2_dir(self, cgroup_path: str) -> str:
        """Directory of a cgroup v2 path such as ``/user.slice/foo.scope``.
        Looks for the unified hierarchy at cgroup_root (pure v2) or at
        cgroup_root/unified (hybrid)."""
        rel = cgroup_path.lstrip("/")
        hybrid = f"{self.cgroup_root}/unified"
        base = hybrid if os.path.isdir(hybrid) else self.cgroup_root
        return f"{base}/{rel}" if rel else base

    def cgroup_v1_dir(self, controller: str, cgroup_path: str) -> str:
        rel = cgroup_path.lstrip("/")
        base = f"{self.cgroup_root}/{controller}"
        return f"{base}/{rel}" if rel else base

    def cgroup_file(self, cgroup_dir: str, name: str) -> str:
        """A control file (``cgroup.procs``, ``memory.pressure``...) of a
        directory returned by cgroup_v2_dir / cgroup_v1_dir."""
        return f"{cgroup_dir}/{name}"

    def cgroup_children(self, cgroup_dir: str) -> list[str]:
        """Sub-directories (child cgroups) of a cgroup directory, sorted."""
        return sorted(f"{cgroup_dir}/{e.name}" for e in os.scandir(cgroup_dir) if e.is_dir(follow_symlinks=False))

    def cgroup_path_of(self, cgroup_dir: str) -> str:
        """Inverse of cgroup_v2_dir: ``/sys/fs/cgroup/unified/a/b`` -> ``/a/b``."""
        base = self.cgroup_v2_dir("/")
        rel = cgroup_dir.removeprefix(base)
        return "/" + rel.strip("/")

    # -- /proc/swaps and zram --------------------------------------------------
    @property
    def swaps(self) -> str:
        return f"{self.root}/swaps"

    def zram_mm_stat(self, device: str) -> str:
        """``/sys/block/zram0/mm_stat`` for device ``zram0`` (or ``/dev/zram0``)."""
        return f"{self.sys_root}/block/{os.path.basename(device)}/mm_stat"
