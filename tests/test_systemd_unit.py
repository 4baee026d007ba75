"""packaging/systemd/pyoomd.service: the fields that matter, the syscall filter
as systemd expands it, and the real `systemd-analyze verify`."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "packaging" / "systemd" / "pyoomd.service"
CONFIG = ROOT / "packaging" / "config.yaml"
ANALYZE = shutil.which("systemd-analyze")

needs_analyze = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze not installed (.ci/run installs it)")


def entries(text: str) -> list[tuple[str, str, str]]:
    """(section, key, value) in order; keys repeat (SystemCallFilter=)."""
    out, section = [], ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        out.append((section, key.strip(), value.strip()))
    return out


def service() -> dict[str, list[str]]:
    d: dict[str, list[str]] = {}
    for section, key, value in entries(UNIT.read_text()):
        if section == "Service":
            d.setdefault(key, []).append(value)
    return d


def one(key: str) -> str:
    values = service()[key]
    assert len(values) == 1, f"{key} set {len(values)} times"
    return values[0]


def test_notify_watchdog_restart_reload() -> None:
    assert one("Type") == "notify"
    assert one("NotifyAccess") == "main"
    assert one("ExecStart") == "/usr/bin/pyoomd run --config /etc/pyoomd/config.yaml"
    assert one("ExecReload") == "/bin/kill -HUP $MAINPID"
    assert one("Restart") == "always"
    assert one("OOMScoreAdjust") == "-1000"
    m = re.fullmatch(r"(\d+)s", one("WatchdogSec"))
    assert m and 10 <= int(m.group(1)) <= 120


def test_capabilities_are_exactly_the_needed_ones() -> None:
    assert set(one("CapabilityBoundingSet").split()) == {
        "CAP_KILL", "CAP_IPC_LOCK", "CAP_SYS_PTRACE", "CAP_SYS_RESOURCE", "CAP_SETUID", "CAP_SETGID",
        "CAP_SYSLOG"}  # /dev/kmsg where dmesg_restrict=1: kernel_oom_kill
    assert one("User") == "root"
    assert "AmbientCapabilities" not in service()  # root: the bounding set is what limits
    assert one("NoNewPrivileges") == "yes"


def test_hardening_at_least_earlyoom() -> None:
    s = service()
    want = {
        "ProtectSystem": "strict", "PrivateTmp": "yes",
        # earlyoom's PrivateDevices= and ProtectKernelLogs= would hide /dev/kmsg
        # (the kernel's own kills): the device cgroup allows it alone, read-only
        "DevicePolicy": "closed", "DeviceAllow": "/dev/kmsg r", "InaccessiblePaths": "-/proc/kmsg",
        "ProtectKernelTunables": "yes", "ProtectKernelModules": "yes",
        "ProtectClock": "yes", "ProtectHostname": "yes",
        "RestrictNamespaces": "yes", "RestrictRealtime": "yes", "RestrictSUIDSGID": "yes",
        "LockPersonality": "yes", "SystemCallArchitectures": "native", "IPAddressDeny": "any",
        "RuntimeDirectory": "pyoomd", "RuntimeDirectoryMode": "0700",
    }
    for key, value in want.items():
        assert s.get(key) == [value], key
    # /home and /root hidden; only /run/user is bound back (notifications)
    assert s["ProtectHome"] == ["tmpfs"] and s["BindReadOnlyPaths"] == ["-/run/user"]
    assert s["IPAddressAllow"] == ["localhost"]
    assert set(one("RestrictAddressFamilies").split()) <= {"AF_UNIX", "AF_INET", "AF_INET6"}
    # what would break the daemon must not be there
    for key in ("ProtectProc", "ProcSubset", "PrivateUsers", "DynamicUser"):
        assert key not in s, key


@cache
def expand(item: str) -> frozenset[str]:
    """A SystemCallFilter item as systemd expands it (groups nest)."""
    if not item.startswith("@"):
        return frozenset({item})
    assert ANALYZE is not None
    out = subprocess.run([ANALYZE, "syscall-filter", "--no-pager", item], capture_output=True, text=True,
                         check=True, timeout=30).stdout
    names: set[str] = set()
    for line in out.splitlines()[1:]:
        word = line.strip()
        if not word or word.startswith("#"):
            continue
        names |= expand(word) if word.startswith("@") else {word}
    return frozenset(names)


def effective_filter() -> set[str]:
    """systemd's rule: the first line decides allow-list mode; each later
    line adds (plain) or removes (~) calls, in order."""
    allowed: set[str] = set()
    for i, value in enumerate(service()["SystemCallFilter"]):
        deny = value.startswith("~")
        items = value.lstrip("~").split()
        names = set().union(*(expand(x) for x in items))
        assert i > 0 or not deny, "the first SystemCallFilter= must be an allow list"
        allowed = allowed - names if deny else allowed | names
    return allowed


@needs_analyze
def test_syscall_filter_allows_what_the_killer_uses() -> None:
    allowed = effective_filter()
    for call in ("pidfd_open", "pidfd_send_signal", "process_mrelease", "mlockall", "openat", "pread64",
                 "clock_nanosleep", "sendto", "prctl", "execve", "clone3",
                 "setgroups", "setresgid", "setresuid", "setuid"):  # hooks and notifications
        assert call in allowed, call
    for call in ("reboot", "setrlimit", "setpriority", "mount", "init_module", "ptrace", "kexec_load",
                 "capset", "chroot", "bpf", "chown", "settimeofday", "swapon", "open_by_handle_at"):
        assert call not in allowed, call
    assert one("SystemCallErrorNumber") == "EPERM"  # a denied call fails; it does not SIGSYS the killer


def unit_for_verify(tmp_path: Path) -> Path:
    """The unit with ExecStart pointed at this interpreter (verify checks the
    binary exists) and at the packaged default config."""
    text = UNIT.read_text()
    exec_start = f"ExecStart={sys.executable} -m pyoomd run --config {CONFIG}"
    text, n = re.subn(r"^ExecStart=.*$", exec_start, text, flags=re.MULTILINE)
    assert n == 1
    out = tmp_path / "pyoomd.service"
    out.write_text(text)
    return out


@needs_analyze
def test_systemd_analyze_verify(tmp_path: Path) -> None:
    assert ANALYZE is not None
    unit = unit_for_verify(tmp_path)
    r = subprocess.run([ANALYZE, "verify", str(unit)], capture_output=True, text=True, timeout=120, cwd=tmp_path,
                       check=False)
    # verify only warns (exit 0) about some problems: an empty stderr is the bar.
    assert r.returncode == 0 and r.stderr.strip() == "", r.stderr
    # and a broken key is caught (the check is real)
    bad = tmp_path / "bad" / "pyoomd.service"
    bad.parent.mkdir()
    bad.write_text(unit.read_text().replace("Type=notify", "Type=notifyy"))
    r = subprocess.run([ANALYZE, "verify", str(bad)], capture_output=True, text=True, timeout=120, cwd=tmp_path,
                       check=False)
    assert "notifyy" in r.stderr


@needs_analyze
def test_security_exposure_is_low(tmp_path: Path) -> None:
    assert ANALYZE is not None
    unit = unit_for_verify(tmp_path)
    r = subprocess.run([ANALYZE, "security", "--offline=yes", "--no-pager", str(unit)],
                       capture_output=True, text=True, timeout=120, cwd=tmp_path,
                       check=False)
    m = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", r.stdout + r.stderr)
    if m is None:
        pytest.skip(f"this systemd-analyze has no offline security check: {r.stderr.strip()[:200]}")
    # root with six bounded capabilities and loopback IP: 2.7 with systemd 252;
    # 3.1 since /dev/kmsg is read (the kernel's own kills: CAP_SYSLOG, no
    # PrivateDevices= / ProtectKernelLogs=, the device cgroup instead)
    assert float(m.group(1)) <= 3.1, r.stdout
