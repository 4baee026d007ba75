"""The kernel OOM killer's own kills (sense/kmsg.py): its follower's thread
queues reports, the loop logs them."""

from __future__ import annotations

from typing import Any

from ..sense.kmsg import KmsgFollower
from .base import DaemonParts


class KernelLog(DaemonParts):
    """One part of the Daemon (daemon/core.py), as the module docstring says."""

    def start_kernel_log(self) -> None:
        """Follow the kernel log for the kernel OOM killer's kills (off with
        kernel_log.enabled: false).  Unreadable (no CAP_SYSLOG, a container
        without /dev/kmsg): one warning, and the daemon runs on without it."""
        cfg = getattr(self.settings, "kernel_log", None)
        if cfg is None or not cfg.enabled:
            self.kernel_log_state = "off"
            return
        follower = KmsgFollower(self._kernel_report, cfg.path)
        why = follower.open()
        if why is not None:
            self.kernel_log_state = f"unavailable: {why}"
            self.emit("warning", "kernel_log_unavailable", path=cfg.path, error=why,
                      message="kernel OOM kills will not be reported")
            return
        self.kmsg = follower.start()
        self.kernel_log_state = f"following {cfg.path}"

    def stop_kernel_log(self) -> None:
        if self.kmsg is not None:
            self.kmsg.stop()
            self.kmsg = None

    def _kernel_report(self, severity: str, event: str, fields: dict[str, Any]) -> None:
        """From the follower's thread: queue it for the loop, and wake it."""
        self.kernel_reports.append((severity, event, fields))
        self.wake()

    def report_kernel(self) -> None:
        """In the loop: log what the follower found (kernel_oom_kill, ...)."""
        while self.kernel_reports:
            severity, event, fields = self.kernel_reports.popleft()
            self.emit(severity, event, **fields)

