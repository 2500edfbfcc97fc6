"""Watches the VNA's change feed (Orthanc `/changes`) for StableStudy events.

The position is kept in a file written atomically, so a restart resumes where it stopped.
StableStudy can repeat for one study; the outbox key makes the repeat a no-op.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path

from pacsflow.dicom.dicomweb import OrthancExtras
from pacsflow.errors import PermanentError, TransientError
from pacsflow.gateway.spool import write_durably

log = logging.getLogger(__name__)


class ChangeFeedWatcher:
    def __init__(
        self,
        orthanc: OrthancExtras,
        position_file: Path,
        on_stable_study: Callable[[str], None],
        *,
        poll_s: float = 2.0,
    ) -> None:
        self.orthanc = orthanc
        self.position_file = position_file
        self.on_stable_study = on_stable_study
        self.poll_s = poll_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.caught_up = False

    @property
    def position(self) -> int:
        try:
            return int(self.position_file.read_text().strip() or 0)
        except FileNotFoundError:
            return 0

    def _save(self, seq: int) -> None:
        tmp = self.position_file.with_suffix(".next")
        tmp.unlink(missing_ok=True)
        write_durably(tmp, str(seq).encode())
        tmp.replace(self.position_file)

    def poll_once(self) -> int:
        """Process one page of changes; returns how many StableStudy events were handled."""
        since = self.position
        page = self.orthanc.changes(since, limit=100)
        handled = 0
        last = since
        for change in page.get("Changes", []):
            if change.get("ChangeType") == "StableStudy":
                try:
                    study_uid = self._study_uid(change)
                    if study_uid:
                        # Handled before the position moves: a crash repeats, never skips.
                        self.on_stable_study(study_uid)
                        handled += 1
                except PermanentError as exc:  # e.g. deleted since: skip it, say why
                    log.error("change %s skipped: %s", change.get("Seq"), exc)
                except TransientError:
                    if last != since:
                        self._save(last)  # keep what was done; retry from this change
                    raise
            last = int(change.get("Seq", last))
        last = max(last, int(page.get("Last", since)))
        if last != since:
            self._save(last)
        self.caught_up = bool(page.get("Done", True))
        return handled

    def _study_uid(self, change: dict[str, object]) -> str | None:
        path = str(change.get("Path", ""))
        r = self.orthanc._request("GET", path)
        if r.status_code != 200:
            return None
        tags = r.json().get("MainDicomTags", {})
        return str(tags.get("StudyInstanceUID") or "") or None

    def start(self) -> None:
        def loop() -> None:
            while not self._stop.is_set():
                try:
                    self.poll_once()
                    while not self.caught_up and not self._stop.is_set():
                        self.poll_once()
                except TransientError as exc:
                    log.warning("change feed: %s", exc)
                except Exception:
                    log.exception("change feed pass failed")
                self._stop.wait(self.poll_s)

        self._thread = threading.Thread(target=loop, name="vna-change-feed", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=5)
