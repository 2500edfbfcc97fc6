"""The VNA change-feed watcher against Orthanc's real /changes (StableStudy)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from pacsflow.config import Settings
from pacsflow.dicom.dicomweb import OrthancExtras
from pacsflow.gateway.change_feed import ChangeFeedWatcher
from pacsflow.testing.dicom_factory import write_tiny_study
from pacsflow.testing.services import storescu

pytestmark = [pytest.mark.orthanc, pytest.mark.dcmtk]


def test_stable_study_is_reported_once_and_position_survives_restart(
    orthanc: Settings, tmp_path: Path
) -> None:
    study_uid, files = write_tiny_study(tmp_path / "s", slices=2)
    assert storescu(orthanc, files).returncode == 0
    position = tmp_path / "changes.seq"
    seen: list[str] = []
    watcher = ChangeFeedWatcher(OrthancExtras(orthanc.orthanc), position, seen.append)
    deadline = time.monotonic() + orthanc.orthanc.stable_age_s + 20
    while study_uid not in seen and time.monotonic() < deadline:
        watcher.poll_once()
        time.sleep(0.5)
    assert study_uid in seen
    assert position.read_text().strip().isdigit()

    restarted: list[str] = []
    again = ChangeFeedWatcher(OrthancExtras(orthanc.orthanc), position, restarted.append)
    again.poll_once()
    assert study_uid not in restarted  # resumed after the position, not from the start
