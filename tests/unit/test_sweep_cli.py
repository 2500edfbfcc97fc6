"""`pacsflow sweep`: the deployment names it starts, the parameters it sends, the status it
prints from the checkpoints."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from deployments.catalog import CATALOG
from pacsflow.cli.main import build_parser, main
from pacsflow.cli.sweep_cmd import (
    ARCHIVE_SWEEP_DEPLOYMENT,
    SCREENING_DEPLOYMENT,
    archive_sweep_parameters,
    checkpoints,
    describe_checkpoint,
)
from pacsflow.errors import InvalidInputError
from pacsflow.pathways.cohort import CohortLedger, save_ledger
from pacsflow.pathways.sweep import SweepCheckpoint, save_checkpoint


def test_the_cli_starts_registered_on_demand_and_scheduled_deployments() -> None:
    by_name = {spec.full_name: spec for spec in CATALOG}
    assert not by_name[ARCHIVE_SWEEP_DEPLOYMENT].dispatched
    assert by_name[ARCHIVE_SWEEP_DEPLOYMENT].cron is None
    assert by_name[SCREENING_DEPLOYMENT].cron is not None


def _args(*argv: str) -> object:
    return build_parser().parse_args(["sweep", "start", *argv])


def test_archive_sweep_parameters_only_what_was_given() -> None:
    args = _args("--pathway", "stroke_triage", "--start", "2026-01-01", "--end", "2026-01-31")
    assert archive_sweep_parameters(args) == {  # type: ignore[arg-type]
        "pathway": "stroke_triage",
        "start": "2026-01-01",
        "end": "2026-01-31",
    }
    args = _args(
        "--pathway",
        "nodule_followup",
        "--last-days",
        "7",
        "--name",
        "n1",
        "--modality",
        "",
        "--body-part",
        "CHEST",
        "--body-part",
        "LUNG",
        "--max-in-flight",
        "2",
        "--no-dispatch",
        "--no-shadow",
    )
    assert archive_sweep_parameters(args) == {  # type: ignore[arg-type]
        "pathway": "nodule_followup",
        "last_days": 7,
        "sweep": "n1",
        "modality": "",
        "body_parts": ["CHEST", "LUNG"],
        "max_in_flight": 2,
        "dispatch": False,
        "shadow": False,
    }
    with pytest.raises(InvalidInputError):
        archive_sweep_parameters(_args("--pathway", "stroke_triage"))  # type: ignore[arg-type]


def test_status_lists_checkpoints_with_their_cohort(tmp_path: Path) -> None:
    save_checkpoint(
        tmp_path,
        SweepCheckpoint(
            sweep="nightly",
            selection="x",
            window_start=date(2026, 3, 4),
            yielded=12,
            skipped=3,
            updated_at=datetime(2026, 3, 5, 2, 30, tzinfo=UTC),
        ),
    )
    ledger = CohortLedger(sweep="nightly", start=date(2025, 1, 1))
    save_ledger(tmp_path, ledger)
    (tmp_path / "notes.txt").write_text("not a checkpoint")
    found = checkpoints(tmp_path)
    assert [c.sweep for c in found] == ["nightly"]
    line = describe_checkpoint(found[0], tmp_path)
    assert "next StudyDate 2026-03-04" in line and "12 handed out, 3 skipped" in line
    assert "cohort 0 patient(s) since 2025-01-01" in line
    assert checkpoints(tmp_path / "missing") == []


def test_reset_forgets_checkpoint_and_ledger(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PACSFLOW_SWEEPS_CHECKPOINT_DIR", str(tmp_path))
    save_ledger(tmp_path, CohortLedger(sweep="old", start=date(2025, 1, 1)))
    assert main(["sweep", "reset", "old"]) == 0
    assert list(tmp_path.glob("*.json")) == []
    assert main(["sweep", "reset", "old"]) == 1
    assert "no sweep 'old'" in capsys.readouterr().err
