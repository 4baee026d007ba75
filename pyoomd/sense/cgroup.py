"""Cgroups: where a process lives, who else lives there, and how they fare.

Reads only; every path comes from ``Procfs`` (cgroup_v2_dir, cgroup_v1_dir,
cgroup_file).  Parsing is pure (``parse_*``); the readers are short.

v2 (unified) is preferred: ``cgroup.procs``, ``cgroup.kill`` (Linux 5.14),
``memory.current``, ``memory.pressure``, ``memory.oom.group``.  On a hybrid
host (as here: v1 controllers, and a v2 tree at /sys/fs/cgroup/unified with
PSI but no memory controller) the memory files may be absent from v2; then
the v1 memory controller gives ``memory.usage_in_bytes`` and membership, and
there is no pressure, no oom.group and no cgroup.kill.

Preferences (systemd's ``ManagedOOMPreference=``, written as the extended
attributes ``user.oomd_avoid`` / ``user.oomd_omit`` on the unit's cgroup):

- ``omit``: the cgroup is never chosen by the cgroup-aware choice, and none of
  its processes is ever a candidate.  systemd-oomd "ignores this cgroup as a
  candidate and will not perform any actions on it"; a process-granular killer
  that still killed its processes would break that promise.
- ``avoid``: chosen last.  The cgroup-aware choice takes it only when no other
  leaf is eligible; its processes get badness 0, so they rank after every
  process with any badness (systemd-oomd: "only if there are no other viable
  candidates").  Badness 0 rather than a separate sort key keeps the lazy
  scan's early stop exact (a lower badness never raises its bound).

The attribute counts on the cgroup itself or its nearest ancestor that has one
(a unit's processes often sit in a child cgroup of the unit, e.g. delegated
or ``.../app.slice/foo.service/main``).  As in systemd-oomd, only cgroup
directories owned by root are believed: ``user.*`` attributes can be set by
the directory's owner, and a delegated (user-owned) cgroup must not be able
to exempt itself.

Cgroup namespaces.  In a container with its own cgroup namespace (cgroup v2
under containerd or CRI-O; the DaemonSet's pod) ``/proc/PID/cgroup`` of a
process outside it reads relative to the namespace's root:
``/../../../kubepods-besteffort.slice/...``.  With the node's tree mounted
at the cgroup root (the DaemonSet's hostPath volume), such a path is
resolved once the namespace's root is known in that tree: its depth is the
number of ``..`` in pid 1's path (pid 1 of a hostPID pod is the node's init,
outside the namespace), and it is the directory at that depth where our own
cgroup (``/proc/self/cgroup``, inside the namespace) lists our pid.  Found
once and kept; where it cannot be found (no node tree mounted, no hostPID)
such paths name no directory, as before.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from ..errors import ParseError
from ..model import Pressure
from . import parse
from .procfs import Procfs

XATTR_AVOID = "user.oomd_avoid"
XATTR_OMIT = "user.oomd_omit"
# cgroup.procs of a busy cgroup: 1 MiB holds ~140k pids, more than pid_max's default.
PROCS_LIMIT = 1 << 20
# The namespace root's search reads at most this many directories at a level
# (a node's kubepods tree has a few hundred down to the containers).
MAX_NS_SEARCH = 20000


@dataclass(frozen=True, slots=True)
class CgroupRef:
    """A cgroup as seen from a process: its path and which tree it is in."""

    path: str  # as in /proc/PID/cgroup, e.g. "/user.slice/app.scope"
    v2: bool  # True: unified hierarchy; False: v1 memory controller


def parse_procs(data: bytes, path: str = "cgroup.procs") -> list[int]:
    """cgroup.procs / tasks -> pids (one decimal per line)."""
    out = []
    for line in data.split(b"\n"):
        line = line.strip()
        if line:
            if not line.isdigit():
                raise ParseError(path, "pid", line, "not a pid")
            out.append(int(line))
    return out


def parse_flag(data: bytes, path: str, field: str) -> bool:
    """A 0/1 file such as memory.oom.group."""
    value = data.strip()
    if value not in (b"0", b"1"):
        raise ParseError(path, field, value, "expected 0 or 1")
    return value == b"1"


def parse_bytes(data: bytes, path: str, field: str) -> int:
    """memory.current / memory.usage_in_bytes (``max`` is not a usage)."""
    return parse.parse_int_file(data, path, field)


class Cgroups:
    """Cgroup reads over a Procfs.  Never raises for a cgroup that vanished:
    membership and pressure of a removed cgroup are just empty/None."""

    def __init__(self, procfs: Procfs) -> None:
        self.procfs = procfs
        self._ns_root: tuple[str, ...] | None = None
        self._ns_root_known = False

    # -- cgroup namespaces (see the module docstring) ------------------------
    def tree_path(self, path: str) -> str:
        """The path in the tree at the cgroup root for a v2 path as
        /proc/PID/cgroup shows it: itself, unless we are in a cgroup
        namespace whose root that tree shows below its own (then relative
        to that root, climbing out of it with ``/../x``)."""
        root = self.namespace_root()
        if not root:  # not in a namespace, or its root is the tree's, or unknown
            return path
        parts = [p for p in path.strip("/").split("/") if p]
        up = next((i for i, p in enumerate(parts) if p != ".."), len(parts))
        if up > len(root):
            return path  # above the tree's root: names no directory below it
        return "/" + "/".join((*root[: len(root) - up], *parts[up:]))

    def namespace_root(self) -> tuple[str, ...] | None:
        """Our cgroup namespace's root in the tree at the cgroup root, as path
        components (() when the namespace is the tree's own), or None."""
        if not self._ns_root_known:
            self._ns_root = self._find_namespace_root()
            self._ns_root_known = True
        return self._ns_root

    def _v2_path(self, pid: int) -> str | None:
        try:
            return parse.parse_cgroup(self.procfs.read_pid(pid, "cgroup", 1 << 16))[0]
        except (OSError, ParseError):
            return None

    def _find_namespace_root(self) -> tuple[str, ...] | None:
        init, own = self._v2_path(1), self._v2_path(self.procfs.self_pid)
        if init is None or own is None or own.startswith("/.."):
            return None
        depth = 0
        for p in init.strip("/").split("/"):
            if p != "..":
                break
            depth += 1
        if depth == 0:
            return ()  # pid 1 is inside: the namespace is the whole tree
        own_parts = tuple(p for p in own.strip("/").split("/") if p)
        me = str(self.procfs.self_pid).encode()
        level: list[tuple[str, ...]] = [()]
        for _ in range(depth):
            nxt: list[tuple[str, ...]] = []
            for parts in level:
                d = self.procfs.cgroup_v2_dir("/" + "/".join(parts))
                try:
                    nxt.extend((*parts, os.path.basename(c)) for c in self.procfs.cgroup_children(d))
                except OSError:
                    continue
            level = nxt
            if len(level) > MAX_NS_SEARCH:
                return None
        for parts in level:
            procs = self.procfs.cgroup_file(self.procfs.cgroup_v2_dir("/" + "/".join((*parts, *own_parts))),
                                            "cgroup.procs")
            try:
                if me in self.procfs.read(procs, PROCS_LIMIT).split():
                    return parts
            except OSError:
                continue
        return None

    # -- where a process lives -------------------------------------------
    def of_pid(self, pid: int) -> CgroupRef | None:
        """The v2 path if the unified tree has a directory for it, else the
        v1 memory path; None if the process is gone."""
        try:
            v2, v1 = parse.parse_cgroup(self.procfs.read_pid(pid, "cgroup", 1 << 16),
                                        self.procfs.pid_file(pid, "cgroup"))
        except (OSError, ParseError):
            return None
        if v2 is not None:
            return CgroupRef(v2, True)
        return CgroupRef(v1, False) if v1 is not None else None

    def ref(self, path: str | None) -> CgroupRef | None:
        """A CgroupRef for a path as ProcInfo.cgroup holds it (the v2 path
        when the process has one, else its v1 memory path)."""
        if path is None:
            return None
        return CgroupRef(path, self.procfs.isdir(self.procfs.cgroup_v2_dir(self.tree_path(path))))

    def dir(self, cg: CgroupRef) -> str:
        if cg.v2:
            return self.procfs.cgroup_v2_dir(self.tree_path(cg.path))
        return self.procfs.cgroup_v1_dir("memory", cg.path)

    def _read(self, cg: CgroupRef, name: str, limit: int = 4096) -> bytes | None:
        try:
            return self.procfs.read(self.procfs.cgroup_file(self.dir(cg), name), limit)
        except OSError:
            return None

    # -- membership and group kill ---------------------------------------
    def members(self, cg: CgroupRef) -> list[int]:
        """Pids in exactly this cgroup (not its children), as our PID
        namespace sees them.  Empty if the cgroup is gone."""
        data = self._read(cg, "cgroup.procs", PROCS_LIMIT)
        if data is None:
            return []
        try:
            return parse_procs(data, self.procfs.cgroup_file(self.dir(cg), "cgroup.procs"))
        except ParseError:
            return []

    def oom_group(self, cg: CgroupRef) -> bool:
        """memory.oom.group = 1 (v2 with the memory controller only)."""
        if not cg.v2:
            return False
        data = self._read(cg, "memory.oom.group", 64)
        if data is None:
            return False
        try:
            return parse_flag(data, self.procfs.cgroup_file(self.dir(cg), "memory.oom.group"), "memory.oom.group")
        except ParseError:
            return False

    def kill_file(self, cg: CgroupRef) -> str | None:
        """The cgroup.kill file, if this kernel and tree have it."""
        if not cg.v2:
            return None
        path = self.procfs.cgroup_file(self.dir(cg), "cgroup.kill")
        return path if self.procfs.exists(path) else None

    # -- size and pressure ---------------------------------------------------
    def memory_bytes(self, cg: CgroupRef) -> int | None:
        """memory.current (v2) or memory.usage_in_bytes (v1); None if absent
        (a v2 tree without the memory controller)."""
        name = "memory.current" if cg.v2 else "memory.usage_in_bytes"
        data = self._read(cg, name, 64)
        if data is None:
            return None
        try:
            return parse_bytes(data, self.procfs.cgroup_file(self.dir(cg), name), name)
        except ParseError:
            return None

    def pressure(self, cg: CgroupRef) -> Pressure | None:
        """memory.pressure of a v2 cgroup; None where absent (v1, no PSI)."""
        if not cg.v2:
            return None
        data = self._read(cg, "memory.pressure")
        if data is None:
            return None
        try:
            return parse.parse_pressure(data, self.procfs.cgroup_file(self.dir(cg), "memory.pressure"))
        except ParseError:
            return None

    # -- systemd's ManagedOOMPreference ---------------------------------------
    def preference(self, cg: CgroupRef) -> str | None:
        """"omit", "avoid" or None: from the cgroup or its nearest ancestor
        carrying either attribute (see the module docstring)."""
        path = cg.path
        while True:
            pref = self._own_preference(CgroupRef(path, cg.v2))
            if pref is not None:
                return pref
            if path in ("", "/"):
                return None
            path = os.path.dirname(path.rstrip("/")) or "/"

    def preference_of_path(self, path: str) -> str | None:
        """preference() of a path as ProcInfo.cgroup holds it (what the
        victim choice asks: judge/choose.py Scoring.preference)."""
        cg = self.ref(path)
        return self.preference(cg) if cg is not None else None

    def _own_preference(self, cg: CgroupRef) -> str | None:
        d = self.dir(cg)
        try:
            if self.procfs.owner_uid(d) != 0:
                return None  # not believed: the owner could exempt itself
        except OSError:
            return None
        for name, pref in ((XATTR_OMIT, "omit"), (XATTR_AVOID, "avoid")):
            if _xattr_true(self.procfs, d, name):
                return pref
        return None

    # -- the tree -------------------------------------------------------------
    def leaves(self, root: str) -> list[CgroupRef]:
        """v2 leaf cgroups at or below ``root`` (a path like /user.slice);
        ``root`` itself when it has no children."""
        out: list[CgroupRef] = []
        stack = [self.procfs.cgroup_v2_dir(root)]
        while stack:
            d = stack.pop()
            try:
                children = self.procfs.cgroup_children(d)
            except OSError:
                continue  # removed while we walked
            if children:
                stack.extend(reversed(children))
            else:
                out.append(CgroupRef(self.procfs.cgroup_path_of(d), True))
        return out


def _xattr_true(procfs: Procfs, path: str, name: str) -> bool:
    """systemd writes "1"; an absent attribute (ENODATA) or an unsupported
    filesystem is false."""
    try:
        value = procfs.getxattr(path, name)
    except OSError:  # ENODATA (absent), ENOTSUP, EACCES, ENOENT (removed)
        return False
    return value.strip() not in (b"", b"0")


@dataclass(frozen=True, slots=True)
class LeafStat:
    """What the cgroup-aware choice compares about one leaf cgroup."""

    cgroup: CgroupRef
    pids: tuple[int, ...]
    memory_kib: int  # memory.current, or the members' RSS+swap without a memory controller
    pressure: float  # memory.pressure some avg10 (0 without PSI)
    preference: str | None

    @classmethod
    def read(cls, cgroups: Cgroups, cg: CgroupRef, procfs: Procfs) -> LeafStat:
        pids = tuple(cgroups.members(cg))
        mem = cgroups.memory_bytes(cg)
        mem_kib = mem // 1024 if mem is not None else sum(_rss_swap_kib(procfs, pid) for pid in pids)
        psi = cgroups.pressure(cg)
        return cls(cg, pids, mem_kib, psi.some.avg10 if psi is not None else 0.0, cgroups.preference(cg))


def _rss_swap_kib(procfs: Procfs, pid: int) -> int:
    try:
        st = parse.parse_status(procfs.read_pid(pid, "status", 16384), procfs.pid_file(pid, "status"))
    except (OSError, ParseError):
        return 0
    return st.rss_kib + st.swap_kib
