"""Start real embedded services on free loopback ports, for tests, the demo and benchmarks."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pacsflow.config import Settings, load_settings
from pacsflow.errors import StackError
from pacsflow.stack.process import free_port
from pacsflow.stack.services import DCMTK_ENV, orthanc_service


def isolated_settings(var_dir: Path, **overrides: Any) -> Settings:
    """Settings whose every port is free and whose state lives in var_dir."""
    groups: dict[str, Any] = {
        "paths": {"var_dir": var_dir},
        "orthanc": {"http_port": free_port(), "dicom_port": free_port(), "stable_age_s": 2},
        "prefect": {"port": free_port()},
        "mlflow": {"port": free_port()},
        "gateway": {
            "dicom_port": free_port(),
            "mllp_port": free_port(),
            "http_port": free_port(),
        },
    }
    for group, values in overrides.items():
        if isinstance(values, dict) and isinstance(groups.get(group), dict):
            groups[group] = {**groups[group], **values}
        else:
            groups[group] = values
    return load_settings(**groups)


@contextmanager
def running_orthanc(settings: Settings) -> Iterator[Settings]:
    """A real Orthanc with DICOMweb for the duration of the block."""
    proc = orthanc_service(settings)
    proc.start()
    try:
        proc.wait_ready()
        yield settings
    finally:
        proc.stop()


def storescu(
    settings: Settings,
    files: Sequence[Path] | Path,
    *,
    port: int | None = None,
    called_aet: str | None = None,
    calling_aet: str = "MODALITY1",
) -> subprocess.CompletedProcess[str]:
    """Send files (or a folder, recursively) with dcmtk's storescu to Orthanc or a gateway."""
    if shutil.which("storescu") is None:
        raise StackError("dcmtk's storescu is not installed (make bootstrap)")
    target_port = port if port is not None else settings.orthanc.dicom_port
    called = called_aet or settings.orthanc.aet
    paths = [files] if isinstance(files, Path) else list(files)
    argv = ["storescu", "-aet", calling_aet, "-aec", called, "-R", "+sd", "+r", "-nh"]
    argv += ["127.0.0.1", str(target_port), *map(str, paths)]
    env = {**os.environ, **DCMTK_ENV}  # Nagle off on this end of the association too
    return subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False, env=env)
