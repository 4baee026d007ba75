"""SIGHUP: fresh settings (and policies) from the compile child, in a thread;
the loop puts them in force once they are back, or keeps the running ones."""

from __future__ import annotations

import threading
from typing import Any

from ..errors import ConfigError
from ..judge.make import make_judge
from .base import DaemonParts
from .tick import _approach


class Reload(DaemonParts):
    """One part of the Daemon (daemon/core.py), as the module docstring says."""

    def reload(self) -> None:
        """Re-read the configuration now, waiting for it; a bad one is logged
        and the running one kept (a killer must not die of a typo).  The
        loop itself does not wait: see _start_reload."""
        if self._start_reload():
            assert self._reload_job is not None
            self._reload_job[0].join()
            self._finish_reload()

    def _start_reload(self) -> bool:
        """SIGHUP: ask ``reloader`` for fresh settings in a thread.  It runs
        the compile child (daemon/launch.py: ~0.2 s, as long as a slow disk makes
        it, killed after 30 s); meanwhile the loop goes on sampling and
        killing with what it has, and the thread wakes it when done.  False
        when nothing was started."""
        self.state.reload = False
        if self.reloader is None:
            self.emit("warning", "reload_unsupported")
            return False
        self.emit("info", "reloading")
        reloader = self.reloader
        box: dict[str, Any] = {}

        def work() -> None:
            try:
                box["settings"] = reloader()
            except Exception as e:  # noqa: BLE001 - reported by _finish_reload, in the loop
                box["error"] = e
            finally:
                box["done"] = True  # before the wake: the loop must see it done once woken
                self.wake()

        job = threading.Thread(target=work, name="pyoomd-reload", daemon=True)
        self._reload_job = (job, box)
        job.start()
        return True

    def _finish_reload(self) -> None:
        """In the loop, once the reload thread is done: put the new settings
        in force, or log why not and keep the running ones."""
        assert self._reload_job is not None
        box = self._reload_job[1]
        self._reload_job = None
        try:
            if "error" in box:
                raise box["error"]
            settings = box["settings"]
            thresholds = settings.compile(self.last_sample.mem_total_kib, self.last_sample.swap_total_kib)
            loaded = self.policy_loader(settings) if self.policy_loader is not None else None
        except Exception as e:  # noqa: BLE001 - ConfigError, ValueError, or anything: never die of a reload
            error = str(e) if isinstance(e, (ConfigError, ValueError)) else f"{type(e).__name__}: {e}"
            self.emit("error", "reload_failed", error=error, dry_run=self.settings.dry_run,
                      **self._policy_fields())
            return
        if loaded is not None:
            self.use_policies(loaded)
        old_kernel_log = getattr(self.settings, "kernel_log", None)
        self.settings, self.thresholds = settings, thresholds
        self.judge = make_judge(settings, thresholds)
        if getattr(settings, "kernel_log", None) != old_kernel_log and self.kernel_log_state != "not started":
            self.stop_kernel_log()
            self.start_kernel_log()
        self.growth.weight, self.growth.window_s = settings.growth.weight, settings.growth.window
        self.growth.approach_kib = _approach(thresholds)
        self.emit("info", "reloaded", dry_run=settings.dry_run, mem_term_kib=thresholds.mem_term_kib,
                  mem_kill_kib=thresholds.mem_kill_kib, mem_warn_kib=thresholds.mem_warn_kib,
                  swap_term_kib=thresholds.swap_term_kib, swap_kill_kib=thresholds.swap_kill_kib,
                  grace_s=settings.kill.grace, **self._policy_fields())
        self._warn_raised()
        self._policy_findings()

