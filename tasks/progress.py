"""A sweep's progress where operators look: a Prefect progress artifact on the flow run
(the run's Artifacts tab in the UI) and a log line now and then. Counts only, no PHI."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any
from uuid import UUID

from prefect import get_run_logger
from prefect.artifacts import create_progress_artifact, update_progress_artifact

from pacsflow.pathways.sweep import SweepProgress


def artifact_key(*parts: str) -> str:
    """Prefect artifact keys allow lowercase letters, digits and dashes only."""
    return re.sub(r"-+", "-", re.sub(r"[^a-z0-9-]", "-", "-".join(parts).lower())).strip("-")


def percent(progress: SweepProgress) -> float:
    """Share of the sweep done: studies over the estimate once a window is complete (the
    estimate extrapolates the completed days), else the share of days read (0 at first)."""
    if progress.days_done > 0 and progress.estimated_total > 0:
        return min(100.0, 100.0 * progress.done / progress.estimated_total)
    if progress.days_total:
        return min(100.0, 100.0 * progress.days_done / progress.days_total)
    return 0.0


class ProgressReporter:
    """Throttled: the artifact moves at most every ``every_s`` seconds (or by 1 %), a log
    line every ``log_every`` studies; ``extra()`` adds counts of the caller (dispatched...)."""

    def __init__(
        self,
        label: str,
        *,
        every_s: float = 2.0,
        log_every: int = 50,
        extra: Callable[[], dict[str, Any]] | None = None,
    ) -> None:
        self.label = label
        self.every_s = every_s
        self.log_every = log_every
        self.extra = extra
        self._artifact: UUID | None = None
        self._last_at = 0.0
        self._last_percent = -1.0
        self._last_logged = -1
        self.latest: SweepProgress | None = None

    def _describe(self, progress: SweepProgress) -> str:
        counts = {
            "done": progress.done,
            "of about": progress.estimated_total,
            "skipped": progress.skipped,
            "days": f"{progress.days_done}/{progress.days_total}",
            **(self.extra() if self.extra else {}),
        }
        return f"{self.label}: " + ", ".join(f"{k} {v}" for k, v in counts.items())

    def __call__(self, progress: SweepProgress) -> None:
        self.latest = progress
        share = percent(progress)
        now = time.monotonic()
        if self._artifact is None:
            self._artifact = create_progress_artifact(
                progress=share, description=self._describe(progress)
            )
            self._last_at, self._last_percent = now, share
        elif now - self._last_at >= self.every_s or share - self._last_percent >= 1.0:
            update_progress_artifact(
                self._artifact, progress=share, description=self._describe(progress)
            )
            self._last_at, self._last_percent = now, share
        if progress.done // self.log_every != self._last_logged // self.log_every:
            self._last_logged = progress.done
            get_run_logger().info("%s (%.0f %%)", self._describe(progress), share)

    def finish(self) -> None:
        """The sweep went through its last window: 100 %."""
        if self.latest is None:
            self._artifact = self._artifact or create_progress_artifact(
                progress=100.0, description=f"{self.label}: nothing to sweep"
            )
            return
        description = self._describe(self.latest)
        if self._artifact is None:
            self._artifact = create_progress_artifact(progress=100.0, description=description)
        else:
            update_progress_artifact(self._artifact, progress=100.0, description=description)
        get_run_logger().info("%s (done)", description)
