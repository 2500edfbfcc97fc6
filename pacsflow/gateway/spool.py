"""The gateway's spool: each accepted instance is on disk (fsync'd) before success is sent.

Layout: <spool>/<StudyInstanceUID>/<SeriesInstanceUID>/<SOPInstanceUID>.dcm. A file is
written to a temporary name, fsync'd, then linked into place, so a reader never sees a
partial object and a duplicate SOP Instance UID is detected by the link failing.
"""

from __future__ import annotations

import json
import os
import re
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pacsflow.durable import fsync_dir

_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")


def is_valid_uid(value: str | None) -> bool:
    return bool(value) and len(value) <= 64 and bool(_UID.match(value or ""))


def _make_dirs_durably(directory: Path) -> None:
    """mkdir -p, fsync'ing the parent of every directory created, so a new study's folder
    survives a crash together with the file inside it."""
    missing = []
    current = directory
    while not current.exists():
        missing.append(current)
        current = current.parent
    for folder in reversed(missing):
        try:
            folder.mkdir()
        except FileExistsError:  # another thread made it; it fsyncs it
            continue
        fsync_dir(folder.parent)


def write_durably(path: Path, data: bytes) -> bool:
    """Write data at path atomically and durably. False if the path already existed."""
    parent = path.parent
    if not parent.exists():
        _make_dirs_durably(parent)
    tmp = parent / f".{path.name}.{uuid.uuid4().hex}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
    try:
        view = memoryview(data)
        while view:  # os.write may write less than asked
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)  # fails if a duplicate got there first: never overwrite
        created = True
    except FileExistsError:
        created = False
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(parent)
    return created


class Spool:
    def __init__(self, root: Path, quarantine_root: Path) -> None:
        self.root = root
        self.quarantine_root = quarantine_root
        root.mkdir(parents=True, exist_ok=True)
        quarantine_root.mkdir(parents=True, exist_ok=True)

    def instance_path(self, study_uid: str, series_uid: str, sop_uid: str) -> Path:
        # UIDs were validated (digits and dots), so they are safe path components.
        return self.root / study_uid / series_uid / f"{sop_uid}.dcm"

    def study_dir(self, study_uid: str) -> Path:
        return self.root / study_uid

    def store(self, study_uid: str, series_uid: str, sop_uid: str, data: bytes) -> bool:
        """Spool one instance. True if new, False for a duplicate SOP Instance UID."""
        return write_durably(self.instance_path(study_uid, series_uid, sop_uid), data)

    def quarantine(self, data: bytes, reason: str, origin: dict[str, Any]) -> Path:
        """Keep refused input with its reason for inspection; returns the object's path."""
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
        base = self.quarantine_root / f"{stamp}-{uuid.uuid4().hex[:8]}"
        write_durably(base.with_suffix(".bin"), data)
        meta = {"reason": reason, "at": datetime.now(UTC).isoformat(), **origin}
        write_durably(base.with_suffix(".json"), json.dumps(meta, indent=2).encode())
        return base.with_suffix(".bin")
